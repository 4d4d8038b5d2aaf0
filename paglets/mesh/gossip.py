"""``Gossiper``: the periodic gossip and heartbeat rounds of one host.

Every ``interval`` seconds the host increments its heartbeat and POSTs its
whole table to a few peers (``POST /v1/mesh/gossip``); each peer merges it and
answers with its own table, which the host merges in turn. Targets per round:
up to ``fanout`` random online hosts, one offline host (to notice it is back),
and every seed or discovered URL the table does not know yet.

In a mesh with a key, a URL gets the key (and its answers are merged) only
once the host there has proven it holds the key (`paglets.mesh.hello`); a
proof is dropped when the URL stops answering or refuses the key, so the next
host to answer there proves itself again. A discovered URL that fails the
hello is dropped (the next announcement brings it back); a ``--peer`` is
tried again every round. A gossip message carries at most `MAX_HOSTS`
records and `GOSSIP_MAX_BYTES` bytes, both ways.

The gossiper owns its `aiohttp.ClientSession`. A failed exchange is logged
and forgotten: ``aiohttp`` errors are translated here and never end the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import random
from typing import TYPE_CHECKING, Any, Self

import aiohttp

from paglets.core.errors import (
    AuthenticationError,
    HostUnavailableError,
    PagletError,
    PayloadTooLargeError,
    ProtocolError,
    RequestError,
    error_from_wire,
)
from paglets.mesh.hello import HELLO_PATH, Hello, HelloReply, hello_key, is_proven, new_nonce
from paglets.mesh.peers import MAX_HOSTS
from paglets.transport.body import read_stream
from paglets.transport.cacerts import connector
from paglets.wire import strict_json
from paglets.wire.mesh import HostRecord
from paglets.wire.records import API_PREFIX

if TYPE_CHECKING:
    import ssl as ssl_module
    from collections.abc import Callable, Iterable
    from types import TracebackType

    from paglets.mesh.peers import MergeResult, PeerTable

log = logging.getLogger(__name__)

GOSSIP_PATH = f"{API_PREFIX}/mesh/gossip"
GOSSIP_MAX_BYTES = 4 * 1024 * 1024
"""The largest gossip body a host takes or sends (a full table is far below it)."""
_dumps = json.JSONEncoder(separators=(",", ":")).encode


def gossip_body(sent_at: float, records: Iterable[HostRecord]) -> dict[str, Any]:
    """The JSON body of one gossip message."""
    return {"sent_at": sent_at, "hosts": [r.to_dict() for r in records]}


def parse_gossip(data: Any, max_records: int = MAX_HOSTS) -> tuple[float, list[HostRecord]]:
    """``(sent_at, records)`` from a gossip body.

    Raises:
        ProtocolError: the body or a record in it is malformed.
        PayloadTooLargeError: it carries more than ``max_records`` records
            (checked before any record is decoded).
    """
    if not isinstance(data, dict) or data.keys() != {"sent_at", "hosts"}:
        raise ProtocolError('a gossip body is {"sent_at": number, "hosts": [host records]}')
    sent_at, hosts = data["sent_at"], data["hosts"]
    if isinstance(sent_at, bool) or not isinstance(sent_at, int | float):
        raise ProtocolError("gossip 'sent_at' must be a number")
    if not (math.isfinite(sent_at) and 0 <= sent_at < 2**40):
        raise ProtocolError(f"gossip 'sent_at' must be seconds since the epoch, not {sent_at!r}")
    if not isinstance(hosts, list):
        raise ProtocolError("gossip 'hosts' must be a list")
    if len(hosts) > max_records:
        raise PayloadTooLargeError(
            f"a gossip message carries {len(hosts)} host records; the limit is {max_records} "
            "(the most hosts a mesh table holds)"
        )
    return float(sent_at), [HostRecord.from_dict(h) for h in hosts]


async def _read_capped(resp: aiohttp.ClientResponse, limit: int, url: str) -> bytes:
    if resp.content_length is not None and resp.content_length > limit:
        raise PayloadTooLargeError(
            f"{url} answered with {resp.content_length} bytes (limit {limit})"
        )
    return await read_stream(resp.content, limit, f"the answer of {url}")


def _decode_answer(payload: bytes, status: int, url: str, what: str) -> Any:
    try:
        data = strict_json.loads(payload, f"the {what} answer of {url}")
    except RequestError as exc:
        raise ProtocolError(str(exc)) from None
    if status >= 400:  # noqa: PLR2004
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            raise error_from_wire(str(error.get("type")), str(error.get("message", "")))
        raise ProtocolError(f"{url} answered {what} with HTTP {status}")
    return data


class Gossiper:
    """See the module docstring.

    Args:
        table: the host's peer table.
        on_merge: called with the result of every merge (events, duplicates).
        interval: seconds between rounds.
        api_key: the mesh's bearer key, if any.
        fanout: how many online peers to talk to per round.
        timeout: seconds one exchange may take.
    """

    def __init__(
        self,
        table: PeerTable,
        on_merge: Callable[[MergeResult], None],
        *,
        interval: float,
        api_key: str | None = None,
        fanout: int = 3,
        timeout: float = 5.0,
        ssl: ssl_module.SSLContext | bool = True,
    ) -> None:
        self._ssl = ssl
        self.table = table
        self.interval = interval
        self.fanout = fanout
        self._on_merge = on_merge
        self._headers = {"Content-Type": "application/json"}
        self._hello_key: bytes | None = None
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
            self._hello_key = hello_key(api_key)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._candidates: dict[str, None] = {}  # seeds and discovered URLs, in order
        self._discovered: set[str] = set()  # candidates that came from zeroconf
        self._proven: set[str] = set()  # URLs whose host proved it holds the key
        self._wake = asyncio.Event()
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self.rounds = 0

    def __repr__(self) -> str:
        return f"<Gossiper {self.table.me.name} rounds={self.rounds} every {self.interval:g} s>"

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(timeout=self._timeout, connector=connector(self._ssl))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def add_candidate(self, url: str, *, now: bool = False, discovered: bool = False) -> None:
        """Talk to ``url`` in the coming rounds until the table knows it; ``now`` wakes the loop.

        A ``discovered`` URL (from zeroconf) is dropped if it fails to prove itself.
        """
        url = url.rstrip("/")
        if self.table.find_url(url) is None:
            self._candidates[url] = None
            if discovered:
                self._discovered.add(url)
            if now:
                self._wake.set()

    def is_proven(self, url: str) -> bool:
        """Whether the host at ``url`` proved it holds the mesh key (or there is no key)."""
        return url.rstrip("/") in self._proven

    async def prove(self, url: str) -> None:
        """Make the host at ``url`` prove it holds the mesh key, unless it already has.

        Without a key there is nothing to prove. Sends no key.

        Raises:
            AuthenticationError: the answer is not a valid proof.
            HostUnavailableError: ``url`` cannot be reached.
            PagletError: the host there refused the hello (by name).
        """
        url = url.rstrip("/")
        if self._hello_key is None or url in self._proven:
            return
        hello = Hello(self.table.me.name, url, new_nonce())
        data = await self._post(url, HELLO_PATH, _dumps(hello.to_dict()), "hello", key=False)
        try:
            reply = HelloReply.from_dict(data)
        except RequestError as exc:
            raise ProtocolError(f"{url} answered the hello wrongly: {exc}") from None
        if not is_proven(self._hello_key, hello, reply):
            raise AuthenticationError(
                f"{url} (calling itself {reply.name!r}) did not prove that it holds the mesh "
                "key; it gets no key and nothing it says is merged"
            )
        self._proven.add(url)
        log.debug("gossip: %s (%s) proved it holds the mesh key", url, reply.name)

    async def _post(self, url: str, path: str, body: str, what: str, *, key: bool) -> Any:
        if self._session is None:
            raise HostUnavailableError("the gossiper is closed")
        headers = self._headers if key else {"Content-Type": "application/json"}
        try:
            async with self._session.post(f"{url}{path}", data=body, headers=headers) as resp:
                payload = await _read_capped(resp, GOSSIP_MAX_BYTES, url)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._proven.discard(url)
            raise HostUnavailableError(
                f"cannot send a {what} to {url}: {exc or type(exc).__name__}"
            ) from None
        if status == 401:  # noqa: PLR2004 - it does not take our key: prove it again
            self._proven.discard(url)
        return _decode_answer(payload, status, url, what)

    async def exchange(self, url: str) -> MergeResult:
        """One gossip exchange with the host at ``url``; merges its answer.

        In a mesh with a key, the host at ``url`` first proves it holds it (`prove`).

        Raises `HostUnavailableError` when it cannot be reached, `AuthenticationError`
        when it does not prove it holds the key, and the peer's own error (by name)
        when it refuses.
        """
        url = url.rstrip("/")
        try:
            await self.prove(url)
        except (HostUnavailableError, PayloadTooLargeError):
            raise
        except PagletError:
            if url in self._discovered:
                self._candidates.pop(url, None)
                self._discovered.discard(url)
            raise
        sent_at, records = self.table.gossip()
        body = _dumps(gossip_body(sent_at, records))
        data = await self._post(url, GOSSIP_PATH, body, "gossip", key=True)
        sent_at, records = parse_gossip(data)
        result = self.table.merge(records, sent_at)
        self._proven.add(url)  # without a key: it answered, and that is all there is to know
        self._candidates.pop(url, None)
        self._discovered.discard(url)
        self._on_merge(result)
        return result

    def _targets(self) -> list[str]:
        me = self.table.me.name
        peers = [h for h in self.table.hosts() if h.name != me]
        online = [h.url for h in peers if h.online]
        offline = [h.url for h in peers if not h.online]
        targets = random.sample(online, min(self.fanout, len(online)))
        if offline:
            targets.append(random.choice(offline))  # noqa: S311 - not crypto
        targets += [url for url in self._candidates if url not in targets]
        return targets

    async def farewell(self, timeout: float) -> None:
        """Tell every online peer at once that this host leaves (see `PeerTable.leave`)."""
        self.table.leave()
        me = self.table.me.name
        peers = [h.url for h in self.table.hosts() if h.name != me and h.online]
        if not peers:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(self._exchange_logged(url) for url in peers)), timeout
            )

    async def round(self) -> None:
        """One round: exchange with this round's targets concurrently, and wait for them."""
        self.rounds += 1
        await asyncio.gather(*(self._exchange_logged(url) for url in self._targets()))

    async def _exchange_logged(self, url: str) -> None:
        try:
            await self.exchange(url)
        except PagletError as exc:
            log.debug("gossip: %s", exc)
        except Exception:
            log.exception("gossip with %s failed", url)

    def _launch_round(self) -> None:
        """Start this round's exchanges without waiting: a slow peer never delays a beat."""
        self.rounds += 1
        for url in self._targets():
            if url in self._inflight:
                continue
            task = asyncio.get_running_loop().create_task(
                self._exchange_logged(url), name=f"gossip {url}"
            )
            self._inflight[url] = task
            task.add_done_callback(functools.partial(self._done, url))

    def _done(self, url: str, _task: asyncio.Task[None]) -> None:
        self._inflight.pop(url, None)

    async def run(self, beat: Callable[[], None]) -> None:
        """Rounds every ``interval`` s until cancelled; ``beat`` refreshes our own record."""
        try:
            while True:
                beat()
                self._launch_round()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.interval):  # cancel-safe, unlike wait_for
                        await self._wake.wait()
        finally:
            tasks = list(self._inflight.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
