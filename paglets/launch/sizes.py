"""Sizes as people write them: ``4GiB``, ``512MiB``, ``64KiB``, ``1048576``."""

from __future__ import annotations

import re
from typing import Final

_UNITS: Final = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE: Final = re.compile(r"(\d+)\s*(?:([kmgt])i?b?|b)?", re.IGNORECASE)

SIZE_HINT: Final = "give bytes, or a number with KiB, MiB, GiB or TiB"


def parse_size(text: str) -> int | None:
    """The number of bytes ``text`` means, or ``None`` if it is not a size."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        return None
    return int(match[1]) * _UNITS[(match[2] or "").lower()]
