"""Option types for sizes: ``4GiB``, ``512MiB``, ``64KiB``, ``1048576``."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

import click

if TYPE_CHECKING:
    _SizeType = click.ParamType[int, object]  # generic only in click's stubs of late
else:
    _SizeType = click.ParamType

_UNITS: Final = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"(\d+)\s*(?:([kmgt])i?b?|b)?", re.IGNORECASE)


class ByteSize(_SizeType):
    """A number of bytes, with an optional binary unit (``KiB``, ``MiB``, ``GiB``, ``TiB``)."""

    name = "size"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        if isinstance(value, int):
            return value
        match = _SIZE.fullmatch(str(value).strip())
        if match is None:
            self.fail(
                f"{value!r} is not a size: give bytes, or a number with KiB, MiB, GiB or TiB",
                param,
                ctx,
            )
        return int(match[1]) * _UNITS[(match[2] or "").lower()]


BYTES: Final = ByteSize()
