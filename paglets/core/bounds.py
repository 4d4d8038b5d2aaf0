"""Numbers from outside, checked before they have any effect: finite and in range.

A JSON number can be ``1e400`` (an infinity once decoded), ``NaN`` (which Python's
`json` accepts) or a 400-digit integer; a boolean is a number to Python too. Each
field of a wire record that holds a count or a duration goes through `bounded`,
which refuses all of these with a `RequestError` that names the field and the
range it takes.
"""

from __future__ import annotations

import math
from typing import Literal, overload

from paglets.core.errors import RequestError

_SHOWN_INT = 10**15


@overload
def bounded(value: object, name: str, low: int, high: int, *, integer: Literal[True]) -> int: ...
@overload
def bounded(
    value: object, name: str, low: float, high: float, *, integer: Literal[False] = ...
) -> float: ...
def bounded(
    value: object, name: str, low: float, high: float, *, integer: bool = False
) -> float | int:
    """``value`` if it is a finite number in ``[low, high]`` (a whole one with ``integer``).

    Raises:
        RequestError: not a number (a string or a boolean is not one), not finite,
            not whole where ``integer`` asks, or outside the range.
    """
    kind = "a whole number" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(f"{name} must be {kind} from {low:g} to {high:g}, not {value!r:.40}")
    if isinstance(value, float) and not math.isfinite(value):
        raise RequestError(f"{name} must be a finite number from {low:g} to {high:g}")
    if integer and isinstance(value, float) and not value.is_integer():
        raise RequestError(f"{name} must be a whole number, not {value!r}")
    if not low <= value <= high:
        small = isinstance(value, float) or abs(value) < _SHOWN_INT
        shown = f"{value:g}" if small else "a number too large to show"
        raise RequestError(f"{name} must be from {low:g} to {high:g}, not {shown}")
    return int(value) if integer else float(value)
