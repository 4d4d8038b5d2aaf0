"""Pi by the Chudnovsky series, its terms split across worker paglets on the mesh.

The series adds about 14.18 digits a term. Binary splitting turns a range of
terms ``[first, last)`` into three integers ``(P, Q, T)``; two adjacent ranges
combine into one with three multiplications (`combine`), so the ranges can be
computed anywhere, in any order, and merged in order at the end:

    pi = 426880 * sqrt(10005) * Q / T      (over all the terms)

A `PiTerms` compute job (`paglets.services.compute.job.ComputeJob`) computes
one range once its host's compute-slot scheduler grants it a core;
``paglets-pi-compute`` (`paglets.cli.pi`) submits the ranges as a job group
across the hosts that serve compute slots, merges the results in order and
checks the digits against Machin's formula (`machin_digits`), an independent
method. On hosts without compute slots a `PiWorker` paglet per host computes the
ranges it is sent, as messages.

Integers cross the wire as hexadecimal strings: JSON numbers of thousands of
digits are neither portable nor cheap to convert.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Final

from paglets import Message, Paglet, PagletState
from paglets.services.compute.job import ComputeJob, ComputeJobState

DIGITS_PER_TERM: Final = 14.181647462725477  # log10(640320**3 / (24 * 6 * 2 * 6))
MAX_DIGITS: Final = 1_000_000
_C3_OVER_24: Final = 640320**3 // 24

Terms = tuple[int, int, int]
"""``(P, Q, T)`` of a range of terms."""


def terms_for(digits: int) -> int:
    """How many terms give ``digits`` correct decimals (with a guard term)."""
    return int(digits / DIGITS_PER_TERM) + 2


def split(first: int, last: int) -> Terms:
    """``(P, Q, T)`` of the terms ``[first, last)`` by binary splitting."""
    if last - first == 1:
        if first == 0:
            p = q = 1
        else:
            p = (6 * first - 5) * (2 * first - 1) * (6 * first - 1)
            q = first * first * first * _C3_OVER_24
        t = p * (13591409 + 545140134 * first)
        return p, q, -t if first % 2 else t
    middle = (first + last) // 2
    return combine(split(first, middle), split(middle, last))


def combine(left: Terms, right: Terms) -> Terms:
    """The ``(P, Q, T)`` of two adjacent ranges, ``left`` first."""
    p1, q1, t1 = left
    p2, q2, t2 = right
    return p1 * p2, q1 * q2, q2 * t1 + p1 * t2


def pi_digits(terms: Terms, digits: int) -> str:
    """``"3.1415…"`` to ``digits`` decimals from the ``(P, Q, T)`` of enough terms."""
    _, q, t = terms
    one = 10 ** (digits + 10)  # ten guard digits, cut below
    scaled = (426880 * math.isqrt(10005 * one * one) * q) // t
    return _decimals(scaled // 10**10, digits)


def machin_digits(digits: int) -> str:
    """Pi to ``digits`` decimals by Machin's formula (16 acot 5 - 4 acot 239)."""
    one = 10 ** (digits + 10)
    scaled = 16 * _arccot(5, one) - 4 * _arccot(239, one)
    return _decimals(scaled // 10**10, digits)


def _arccot(x: int, one: int) -> int:
    total = term = one // x
    square, n, sign = x * x, 1, -1
    while term:
        term //= square
        n += 2
        total += sign * (term // n)
        sign = -sign
    return total


def _decimals(value: int, digits: int) -> str:
    """``value / 10**digits`` written out, without the interpreter's digit limit."""
    text = _to_decimal(value).rjust(digits + 1, "0")
    return f"{text[:-digits]}.{text[-digits:]}" if digits else text


def _to_decimal(value: int) -> str:
    """``str(value)`` for any size (splitting by powers of ten, each part small)."""
    if value < 10**1000:
        return str(value)
    half = len(hex(value)) * 4 * 30103 // 200000  # about half its decimal digits
    high, low = divmod(value, 10**half)
    return _to_decimal(high) + _to_decimal(low).rjust(half, "0")


def to_hex(terms: Terms) -> dict[str, str]:
    """The wire form of ``(P, Q, T)``."""
    return {name: hex(value) for name, value in zip("pqt", terms, strict=True)}


def from_hex(data: Any) -> Terms:
    """``(P, Q, T)`` from their wire form; `ValueError` if it is not one."""
    if not isinstance(data, dict) or set(data) != {"p", "q", "t"}:
        raise ValueError('terms are {"p", "q", "t"} as hexadecimal strings')
    p, q, t = (int(str(data[name]), 16) for name in "pqt")
    return p, q, t


# --8<-- [start:job]
@dataclass
class PiTermsState(ComputeJobState):
    first: int = 0
    last: int = 1


class PiTerms(ComputeJob[PiTermsState]):
    """One range of terms as a compute job: its result is ``{"p", "q", "t"}``."""

    State = PiTermsState

    def compute(self) -> dict[str, str]:
        first, last = self.state.first, self.state.last
        if not 0 <= first < last <= terms_for(MAX_DIGITS):
            raise ValueError(f"terms [{first}, {last}) are not a range of at most a million digits")
        return to_hex(split(first, last))


# --8<-- [end:job]
# --8<-- [start:worker]
@dataclass
class PiWorkerState(PagletState):
    ranges: int = 0
    terms: int = 0


class PiWorker(Paglet[PiWorkerState]):
    """Computes ``(P, Q, T)`` of the ranges of terms it is sent: ``terms``
    ``{"first", "last"}`` answers ``{"p", "q", "t", "host", "pid"}``."""

    State = PiWorkerState

    def handle_message(self, message: Message) -> Any:
        if message.kind != "terms":
            return self.not_handled()
        first, last = int(message.args["first"]), int(message.args["last"])
        if not 0 <= first < last <= terms_for(MAX_DIGITS):
            raise ValueError(f"terms [{first}, {last}) are not a range of at most a million digits")
        self.state.ranges += 1
        self.state.terms += last - first
        return {**to_hex(split(first, last)), "host": self.context.host_name, "pid": os.getpid()}


# --8<-- [end:worker]
