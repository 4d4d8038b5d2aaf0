"""Leases: exclusive use of a service for a time.

A caller takes a lease on a service for some seconds and then calls it with
the lease's id; meanwhile every call or lease without that id is refused with
`ServiceLeasedError`, saying for how long it is still held. The holder renews
it before it lapses and releases it when done; a holder that dies or stops
renewing loses it when its time is up. Leases live in the memory of the
service's host (a host restart frees them all).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from paglets.core.errors import ServiceLeasedError

if TYPE_CHECKING:
    from collections.abc import Callable

MIN_LEASE: Final = 0.1
MAX_LEASE: Final = 3600.0


@dataclass(frozen=True, slots=True)
class Lease:
    """One held lease: its id, and when it lapses (the host's monotonic clock)."""

    lease_id: str
    expires: float


class Leases:
    """The leases of one host's services, by contract; see the module docstring."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._held: dict[str, Lease] = {}

    def __repr__(self) -> str:
        return f"<Leases {sorted(self._held)}>"

    def _current(self, contract: str) -> Lease | None:
        lease = self._held.get(contract)
        if lease is not None and lease.expires <= self._clock():
            del self._held[contract]  # lapsed: its holder stopped renewing
            return None
        return lease

    def _refuse(self, contract: str, lease: Lease, asked: str | None) -> ServiceLeasedError:
        left = max(0.0, lease.expires - self._clock())
        mine = "" if asked is None else f" (lease {asked} is not it: it lapsed or was released)"
        return ServiceLeasedError(
            f"service {contract} is leased by another caller for {left:.1f} more s{mine}; "
            "retry after it, or take a lease when it is free"
        )

    def check(self, contract: str, lease_id: str | None) -> None:
        """Refuse a call under no lease or another one while a lease is held.

        Raises:
            ServiceLeasedError: someone else holds a lease; or ``lease_id`` is
                given but no longer held (the caller lost its exclusive use).
        """
        lease = self._current(contract)
        if lease is not None and lease.lease_id != lease_id:
            raise self._refuse(contract, lease, lease_id)
        if lease is None and lease_id is not None:
            raise ServiceLeasedError(
                f"lease {lease_id} of service {contract} lapsed or was released; "
                "take a new one (renew it before it runs out)"
            )

    def take(self, contract: str, seconds: float, lease_id: str | None = None) -> Lease:
        """Take a lease for ``seconds``, or renew ``lease_id`` (the one held) for that long.

        Raises:
            ServiceLeasedError: another lease is held, or ``lease_id`` lapsed.
        """
        self.check(contract, lease_id)
        lease = Lease(lease_id or uuid.uuid4().hex, self._clock() + seconds)
        self._held[contract] = lease
        return lease

    def release(self, contract: str, lease_id: str) -> bool:
        """Give up ``lease_id``; whether it was held (releasing a lapsed one is no error)."""
        lease = self._current(contract)
        if lease is None or lease.lease_id != lease_id:
            return False
        del self._held[contract]
        return True

    def remaining(self, lease: Lease) -> float:
        """Seconds until ``lease`` lapses."""
        return max(0.0, lease.expires - self._clock())
