"""``PagletState``: the base of every paglet's state dataclass."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PagletState:
    """Base class for the one dataclass of state a paglet carries.

    Subclass it with ``@dataclass`` and typed fields. Only the state moves and
    survives deactivation; attributes set on the paglet instance are transient.
    Field types may be primitives, nested dataclasses, lists, tuples, sets,
    dicts with string keys, enums, ``datetime``/``date``, ``UUID``, ``Path``,
    ``Decimal`` and ``bytes``, and optional or union forms of these.
    """
