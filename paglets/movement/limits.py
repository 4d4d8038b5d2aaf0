"""Bounds on arriving envelopes: how large, how fast, how many at once.

A target refuses an envelope it will not take before reading its bulk:

- **Size.** An envelope over ``max_size`` bytes is refused with ``413
  PayloadTooLargeError``, from the request's ``Content-Length`` before any of
  the body is read, and from the sizes its header declares before anything
  after the header is read (so a chunked body is bounded too: the stream must
  be exactly as long as its header says).
- **Pace.** The whole envelope must keep up with ``min_rate`` bytes a second
  after a ``grace`` of seconds: ``t`` seconds after the transfer started, at
  least ``(t - grace) * min_rate`` of its bytes must have arrived. This is a
  deadline for the whole transfer (``grace + size / min_rate`` at most), not
  for each read, so a sender that trickles a byte now and then is cut off
  about ``grace`` seconds in, and what it sent is dropped.
- **Concurrency.** At most ``max_concurrent`` envelopes are received at once;
  one more gets ``429 TooManyTransfersError`` at once, and its paglet stays at
  its source, which may try again. A repeat of a transfer already being
  received is never refused for that: it joins the first.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from paglets.core.errors import PayloadTooLargeError, RequestError, TooManyTransfersError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    Read = Callable[[int], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class InboundLimits:
    """The bounds of one host on arriving envelopes; see the module docstring."""

    max_size: int = 4 << 30
    max_concurrent: int = 16
    min_rate: int = 64 * 1024
    grace: float = 30.0


class InboundGate:
    """Admits arriving envelopes within `InboundLimits`, and paces their reading.

    Args:
        limits: the bounds.
    """

    def __init__(self, limits: InboundLimits) -> None:
        self.limits = limits
        self.active = 0

    def __repr__(self) -> str:
        return f"<InboundGate {self.active}/{self.limits.max_concurrent} receiving>"

    def check_size(self, size: int, what: str) -> None:
        """Refuse an envelope of ``size`` bytes over the limit (``what`` says who says so).

        Raises:
            PayloadTooLargeError: ``size`` is over ``max_size``.
        """
        limit = self.limits.max_size
        if size > limit:
            raise PayloadTooLargeError(
                f"the envelope is {size} bytes ({what}), over this host's limit of "
                f"{limit} bytes (--max-envelope-size)"
            )

    @contextlib.contextmanager
    def admit(self, length: int | None, *, joining: bool = False) -> Iterator[None]:
        """Hold a place among the envelopes being received, for the ``with`` block.

        Args:
            length: the envelope's size, if the request declares it.
            joining: the transfer is being received already (a repeat joins it).

        Raises:
            PayloadTooLargeError: ``length`` is over the size limit.
            TooManyTransfersError: ``max_concurrent`` envelopes are arriving already.
        """
        if length is not None:
            self.check_size(length, "by its Content-Length")
        if not joining and self.active >= self.limits.max_concurrent:
            raise TooManyTransfersError(
                f"this host is receiving {self.active} transfers, as many at once as it "
                "takes (--max-transfers); the paglet stays at its source: try again later"
            )
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1

    def paced(self, read: Read) -> Read:
        """``read`` cut off once it falls behind the minimum rate (see the module docstring).

        Raises (from the returned function):
            RequestError: the envelope arrives too slowly.
        """
        rate, grace = self.limits.min_rate, self.limits.grace
        loop = asyncio.get_running_loop()
        start = loop.time()
        got = 0

        async def paced_read(n: int) -> bytes:
            nonlocal got
            try:
                async with asyncio.timeout_at(start + grace + got / rate):
                    data = await read(n)
            except TimeoutError:
                raise RequestError(
                    f"the envelope arrives too slowly: {got} bytes in "
                    f"{loop.time() - start:.1f} s, while this host takes envelopes at "
                    f"{rate} bytes/s or more after the first {grace:g} s "
                    "(--transfer-min-rate); the transfer is dropped"
                ) from None
            got += len(data)
            return data

        return paced_read
