"""The authoring model: paglets, state, messages, events and errors. No I/O."""
