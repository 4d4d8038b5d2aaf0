"""A tour: a paglet that visits hosts one after the other, then comes home.

The walk of `paglets-search` and `paglets-disk-survey`. The state holds an
`Itinerary` of the hosts to visit and the ``home`` host it started on. Each time
the paglet is running on the host of its current stop, ``run()`` calls
`Tour.visit` there, advances, and dispatches the paglet to the next stop; after
the last one it goes home and sets ``done``. A host it cannot reach is noted
with `Tour.unreachable` and skipped. The caller, on the home host, asks the
paglet for its findings once ``done`` (a proxy follows it while it travels).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from paglets import Itinerary, Paglet, PagletState
from paglets.core.errors import PagletError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from paglets import ItineraryStop


@dataclass
class TourState(PagletState):
    itinerary: Itinerary = field(default_factory=Itinerary)
    home: str = ""
    done: bool = False


TourStateT = TypeVar("TourStateT", bound=TourState)


class TimeLimitError(Exception):
    """The work at one stop took longer than its time limit."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise `TimeLimitError` inside the block once ``seconds`` have passed.

    A real-time timer (``SIGALRM``) interrupts even a long regular-expression
    match, which checks for signals as it goes. Only the main thread gets
    signals: elsewhere the block runs unbounded and the caller's own clock
    checks must do.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(_signum: int, _frame: object) -> None:
        raise TimeLimitError

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Tour(Paglet[TourStateT]):
    """Follows ``state.itinerary``, calling `visit` on each host, then goes home."""

    def visit(self, stop: ItineraryStop) -> None:
        """Do this stop's work here; the subclass's domain action."""
        raise NotImplementedError

    def unreachable(self, stop: ItineraryStop, why: str) -> None:
        """Note that the host of ``stop`` could not be reached."""
        raise NotImplementedError

    async def run(self) -> None:
        itinerary = self.state.itinerary
        stop = itinerary.current
        if stop is not None and stop.host == self.context.host_name:
            self.visit(stop)
            stop = itinerary.advance()
        while stop is not None:
            try:
                self.dispatch(stop.host)
            except PagletError as exc:  # offline, refused: skip it, go on
                self.unreachable(stop, str(exc))
                stop = itinerary.advance()
            else:
                return
        if self.context.host_name != self.state.home:
            self.dispatch(self.state.home)
            return
        self.state.done = True
