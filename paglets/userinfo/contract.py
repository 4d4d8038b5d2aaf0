"""``user-info.v1``: the typed contract of a host's notices (`USER_INFO`).

Served by every host itself (no paglet to start): ``client.service(USER_INFO,
where="beta").list(NoticeQuery(severity="warning"))`` from a script, or
``self.context.service(USER_INFO).list(NoticeQuery())`` from a paglet. A
paglet sends notices with ``self.context.notify`` (one cheap call to its own
host, stamped with its id), not through the contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from paglets.core.contract import Contract
from paglets.core.state import PagletState


@dataclass
class NoticeQuery(PagletState):
    """Which notices: after a seq, of a severity and above, about a job, since a time."""

    after: int = 0
    severity: str = "debug"
    job: str | None = None
    since: float | None = None
    limit: int = 1000


@dataclass
class NoticeRecord(PagletState):
    """One notice; the fields of `paglets.userinfo.model.Notice`, as plain values."""

    seq: int
    at: float
    host: str
    agent_id: str
    kind: str
    severity: str
    title: str
    message: str
    job: str | None = None
    stream: str | None = None


@dataclass
class NoticeList(PagletState):
    """A host's notices that passed the query, oldest first, and its newest seq."""

    host: str
    last: int
    notices: list[NoticeRecord] = field(default_factory=list)


USER_INFO = Contract("user-info.v1", {"list": (NoticeQuery, NoticeList)})
"""The contract of a host's notices."""
