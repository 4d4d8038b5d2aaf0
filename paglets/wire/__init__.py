"""Codecs: JSON control records, state projections and the module allow-list. No I/O."""
