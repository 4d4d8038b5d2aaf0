"""Option types for sizes: ``4GiB``, ``512MiB``, ``64KiB``, ``1048576``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import click

from paglets.launch.sizes import SIZE_HINT, parse_size

if TYPE_CHECKING:
    _SizeType = click.ParamType[int, object]  # generic only in click's stubs of late
else:
    _SizeType = click.ParamType


class ByteSize(_SizeType):
    """A number of bytes, with an optional binary unit (``KiB``, ``MiB``, ``GiB``, ``TiB``)."""

    name = "size"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        if isinstance(value, int):
            return value
        size = parse_size(str(value))
        if size is None:
            self.fail(f"{value!r} is not a size: {SIZE_HINT}", param, ctx)
        return size


BYTES: Final = ByteSize()


def format_bytes(size: float) -> str:
    """``size`` bytes for a table cell, in binary units: ``512 B``, ``1.5 KiB``, ``24.0 GiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":  # noqa: PLR2004
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError  # pragma: no cover - the loop returns
