"""Durability: paglets kept on disk, across deactivation and host restarts.

Every paglet of a host has a row in the host's store (`paglets.persistence`):
its class, ``active`` or ``inactive``, and its durable state. That state is the
creation state until the paglet first writes a checkpoint, then its latest
checkpoint file (a movement envelope of kind ``checkpoint`` under
``<home>/paglets/``). A paglet that arrives by a move keeps the arriving
envelope as its first checkpoint.

- **Deactivate**: after the messages already queued, ``on_deactivating`` runs,
  the paglet writes its checkpoint, the row says ``inactive`` and the process
  stops. Messages sent meanwhile wait, then activate it again.
- **Activate**: a new process starts from the checkpoint and runs
  ``on_activation`` then ``run()``. A message to an inactive paglet activates it
  (unless ``no_delay``), and so does its wake-up time.
- **Host stop** (SIGTERM): every active paglet writes a checkpoint first.
  **Host start**: inactive paglets are listed again (no process); active ones
  are activated from their checkpoint. After a SIGKILL of the host that is the
  last checkpoint (or the creation state): the loss window.

The package: `paglets.durability.service` (``DurabilityService``, the keeper:
rows, deactivation, activation, restarts, recovery), `paglets.durability.timers`
(wake-up times) and `paglets.durability.routes` (the HTTP routes).
"""
