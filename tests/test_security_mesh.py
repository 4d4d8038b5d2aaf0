"""Mesh security: forged gossip records, floods, what discovery trusts, identities and pins."""

from __future__ import annotations

import asyncio
import json
import stat
import time
import uuid
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncZeroconf

from paglets import ConfigurationError, EventKind, HostRecord, ProtocolError
from paglets.mesh.discovery import Announcement, service_info
from paglets.mesh.gossip import parse_gossip
from paglets.mesh.hello import Hello, HelloReply, hello_key, is_proven, new_nonce
from paglets.mesh.identity import HostIdentity, verify
from paglets.mesh.peers import PeerTable, RefusalKind
from paglets.mesh.pins import PinStore, parse_pins
from paglets.mesh.trust import RecordTrust
from paglets.wire.mesh import fingerprint
from tests.conftest import wait_for

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from pathlib import Path

    from paglets import Host

KEY = "s3cret-mesh-key"
FAST = {"gossip_interval": 0.1, "offline_after": 1.0, "warm_children": 0, "api_key": KEY}
AUTH = {"Authorization": f"Bearer {KEY}"}


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 1 << 16):
        yield body[start : start + (1 << 16)]


async def _post(url: str, path: str, data: Any, headers: dict[str, str]) -> tuple[int, Any]:
    body = json.dumps(data).encode()
    headers = {**headers, "Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}{path}", data=_chunks(body), headers=headers) as resp,
    ):
        return resp.status, await resp.json()


async def _post_gossip(url: str, hosts: list[dict[str, Any]]) -> tuple[int, Any]:
    return await _post(url, "/v1/mesh/gossip", {"sent_at": time.time(), "hosts": hosts}, AUTH)


def _identity() -> HostIdentity:
    return HostIdentity(Ed25519PrivateKey.generate())


def _signed(identity: HostIdentity, name: str, port: int, **changes: Any) -> HostRecord:
    record = HostRecord(
        name=name,
        url=f"http://127.0.0.1:{port}",
        mesh_version="dev",
        protocol_version=1,
        version="0.1.0",
        incarnation=time.time_ns() // 1000,
        last_seen=time.time(),
        **changes,
    )
    return identity.sign(record)


def _refused(host: Host) -> list[dict[str, Any]]:
    return [e.data for e in host.events.query(kinds=[EventKind.MESH_RECORD_REFUSED])]


# -- item 8: a host's record can be changed only by that host ----------------------------


@pytest.mark.parametrize("forgery", ["same key, bad signature", "own key", "unsigned"])
async def test_a_forged_record_cannot_repoint_a_host(
    make_host: Callable[..., Awaitable[Host]], forgery: str
) -> None:
    a = await make_host(name="a", **FAST)
    b = await make_host(name="b", peers=(a.url,), **FAST)
    await wait_for(lambda: a.mesh.lookup("b").online, 5, "b joined a")
    real = a.mesh.lookup("b")
    # its public incarnation, a heartbeat that stays "newest" for ever, the forger's URL
    forged = real.replace(
        url="http://127.0.0.9:1", urls=["http://127.0.0.9:1"], heartbeat=10**15
    ).replace(last_seen=time.time())
    if forgery == "own key":
        forged = _identity().sign(forged)
    elif forgery == "unsigned":
        forged = forged.replace(public_key=None, signature=None)
    status, _ = await _post_gossip(a.url, [forged.to_dict()])
    assert status == 200, "a key holder may gossip; the record itself is refused"
    assert a.mesh.lookup("b").url == b.url, "b keeps its URL"
    before = a.mesh.lookup("b").heartbeat
    await wait_for(lambda: a.mesh.lookup("b").heartbeat > before, 5, "b's own heartbeats")
    assert a.mesh.movement_target("b").url == b.url
    if forgery == "own key":
        dup = a.events.query(kinds=[EventKind.MESH_DUPLICATE_NAME])
        assert [(e.data["refused_url"], e.data["kept_url"]) for e in dup] == [
            ("http://127.0.0.9:1", b.url)
        ]
        assert dup[0].data["pinned"] == fingerprint(real.public_key)
    else:
        reason = "bad_signature" if forgery.startswith("same") else "unsigned"
        assert [(r["name"], r["reason"]) for r in _refused(a)] == [("b", reason)]


async def test_b_moving_to_a_new_url_is_taken_because_b_signed_it(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    a = await make_host(name="a", **FAST)
    b = await make_host(name="b", peers=(a.url,), **FAST)
    await wait_for(lambda: a.mesh.lookup("b").online, 5, "b joined a")
    # what a rebind does: b publishes a new URL, signed by itself
    b.mesh.table.set_me(b.mesh.table.me.replace(url="http://127.0.0.1:9", heartbeat=10**6))
    await wait_for(lambda: a.mesh.lookup("b").url == "http://127.0.0.1:9", 5, "b moved")
    assert not _refused(a)


async def test_a_flood_of_records_is_refused_whole(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    a = await make_host(name="a", **FAST)
    template = a.mesh.lookup("a").to_dict()
    flood = [
        template | {"name": f"x{i}", "url": f"http://127.0.0.1:{1000 + i % 60000}", "urls": []}
        for i in range(30_000)
    ]
    status, body = await _post_gossip(a.url, flood)
    assert status == 413
    assert body["error"]["type"] == "PayloadTooLargeError"
    assert "limit" in body["error"]["message"]
    # fewer bytes, still more records than a table holds
    small = [{"name": f"x{i}", "url": "http://a", "mesh_version": "", "protocol_version": 1,
              "version": ""} for i in range(1001)]  # fmt: skip
    status, body = await _post_gossip(a.url, small)
    assert status == 413
    assert body["error"]["message"].startswith(
        "a gossip message carries 1001 host records; the limit is 1000"
    )
    assert len(a.mesh.table) == 1
    assert not a.events.query(kinds=[EventKind.MESH_HOST_JOINED])


async def test_the_table_holds_at_most_its_limit(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    a = await make_host(name="a", **FAST)
    limit = a.mesh.table.max_hosts
    batch = [_signed(_identity(), f"x{i}", 2000 + i).to_dict() for i in range(limit - 1)]
    assert (await _post_gossip(a.url, batch))[0] == 200
    assert len(a.mesh.table) == limit
    more = [_signed(_identity(), f"y{i}", 5000 + i).to_dict() for i in range(10)]
    assert (await _post_gossip(a.url, more))[0] == 200
    assert len(a.mesh.table) == limit
    assert "y0" not in a.mesh.table


def test_table_overflow_is_counted(tmp_path: Path) -> None:
    me = _identity()
    trust = RecordTrust(me, PinStore(tmp_path / "known_hosts"))
    table = PeerTable(_signed(me, "a", 1), 5.0, trust=trust, max_hosts=3)
    result = table.merge([_signed(_identity(), f"x{i}", 10 + i) for i in range(5)], time.time())
    assert len(table) == 3
    assert result.overflow == 3
    assert len(trust.pins) == 2, "names past the limit are not pinned either"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "../etc"}, "host name '../etc' is not valid"),
        ({"name": "x" * 65}, "the limit is 64"),
        ({"url": "ftp://x:1"}, "must start with http:// or https://"),
        ({"url": "http://user:pw@x:1"}, "must not carry a user name or password"),
        ({"url": "http://x:99999"}, "has an invalid port"),
        ({"url": "http://x:1/?q=1"}, "must not have a query or a fragment"),
        ({"url": "http://x:1/" + "p" * 600}, "the limit is 512"),
        ({"url": "http://:1"}, "names no host"),
        ({"urls": ["http://x a:1"]}, "has a space"),
        ({"heartbeat": 2**60}, "'heartbeat' is"),
        ({"heartbeat": -1}, "'heartbeat' is"),
        ({"incarnation": (time.time_ns() // 1000) + 10**14}, "'incarnation' is"),
        ({"last_seen": float("nan")}, "'last_seen' is"),
        ({"last_seen": float("inf")}, "'last_seen' is"),
        ({"paglets": -3}, "'paglets' is"),
        ({"tags": ["t"] * 65}, "at most 64 tags"),
        ({"public_key": "AAAA"}, "'public_key' must be null or 32 bytes"),
        ({"signature": "x" * 88}, "'signature' must be null or 64 bytes"),
    ],
)
def test_record_fields_are_validated_where_parsed(change: dict[str, Any], message: str) -> None:
    data = _signed(_identity(), "b", 2).to_dict() | change
    with pytest.raises(ProtocolError, match=message.replace("?", r"\?")):
        HostRecord.from_dict(data)


def test_gossip_sent_at_must_be_finite() -> None:
    for bad in (float("nan"), float("inf"), -1.0, 1e300):
        with pytest.raises(ProtocolError, match="'sent_at' must be seconds"):
            parse_gossip({"sent_at": bad, "hosts": []})


async def test_a_bad_record_is_a_400_before_any_effect(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    a = await make_host(name="a", **FAST)
    good = _signed(_identity(), "good", 7).to_dict()
    bad = _signed(_identity(), "bad", 8).to_dict() | {"url": "http://u:p@evil:1"}
    status, body = await _post_gossip(a.url, [good, bad])
    assert status == 400
    assert "must not carry a user name or password" in body["error"]["message"]
    assert "good" not in a.mesh.table


# -- item 8: identities and pins ---------------------------------------------------------


async def test_identity_is_made_once_kept_0600_and_pinned_by_peers(
    make_host: Callable[..., Awaitable[Host]], tmp_path: Path
) -> None:
    a = await make_host(name="a", **FAST)
    b = await make_host(name="b", peers=(a.url,), **FAST)
    key_file = b.config.home / "mesh" / "identity.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    me = b.mesh.table.me
    assert me.public_key is not None
    assert verify(me)
    pins_file = a.config.home / "mesh" / "known_hosts"
    await wait_for(lambda: pins_file.exists() and "b ed25519" in pins_file.read_text(), 5, "pin")
    assert stat.S_IMODE(pins_file.stat().st_mode) == 0o600
    assert parse_pins(pins_file.read_text()) == {"b": me.public_key}
    await b.stop()
    again = await make_host(name="b", peers=(a.url,), state_dir=b.config.state_dir, **FAST)
    assert again.mesh.table.me.public_key == me.public_key, "the identity is kept"
    await wait_for(lambda: a.mesh.lookup("b").url == again.url, 5, "b back under its name")
    assert (tmp_path / "state1" / "b" / "mesh" / "identity.key").read_bytes() == (
        key_file.read_bytes()
    )


def test_identity_files_are_the_pkcs8_pem_cryptography_reads_and_writes(tmp_path: Path) -> None:
    made = HostIdentity.load_or_create(tmp_path / "made")  # written without serialization
    pem = (tmp_path / "made" / "identity.key").read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, Ed25519PrivateKey)
    assert made.public_key == HostIdentity(key).public_key
    assert pem == key.private_bytes(  # byte for byte what cryptography itself writes
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    for where, crlf in (("lf", False), ("crlf", True)):  # by hand, or left to cryptography
        theirs = Ed25519PrivateKey.generate()
        pem = theirs.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        (tmp_path / where).mkdir(mode=0o700)
        (tmp_path / where / "identity.key").write_bytes(
            pem.replace(b"\n", b"\r\n") if crlf else pem
        )
        loaded = HostIdentity.load_or_create(tmp_path / where)
        assert loaded.public_key == HostIdentity(theirs).public_key


def test_a_damaged_identity_file_is_refused_by_name(tmp_path: Path) -> None:
    HostIdentity.load_or_create(tmp_path)
    path = tmp_path / "identity.key"
    pem = path.read_bytes()
    path.write_bytes(pem.replace(pem[40:44], b"!!!!"))
    with pytest.raises(ConfigurationError, match="is not a host identity key"):
        HostIdentity.load_or_create(tmp_path)


async def test_a_reinstalled_host_is_refused_until_its_pin_is_deleted(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    a = await make_host(name="a", **FAST)
    b = await make_host(name="b", peers=(a.url,), **FAST)
    await wait_for(lambda: a.mesh.lookup("b").online, 5, "b joined")
    old_key = a.mesh.lookup("b").public_key
    await b.stop()
    # the same name on a fresh state directory: a new identity
    b2 = await make_host(name="b", peers=(a.url,), **FAST)
    assert b2.mesh.table.me.public_key != old_key
    await wait_for(
        lambda: bool(a.events.query(kinds=[EventKind.MESH_DUPLICATE_NAME])), 5, "refused"
    )
    assert a.mesh.lookup("b").public_key == old_key
    assert not a.mesh.lookup("b").online
    # the operator deletes b's line on a: a pins b's next fresh record
    pins_file = a.config.home / "mesh" / "known_hosts"
    lines = pins_file.read_text().splitlines(keepends=True)
    pins_file.write_text("".join(line for line in lines if not line.startswith("b ")))
    await wait_for(lambda: a.mesh.lookup("b").url == b2.url, 10, "b2 pinned")
    assert a.mesh.lookup("b").public_key == b2.mesh.table.me.public_key
    await wait_for(lambda: f"b ed25519 {b2.mesh.table.me.public_key}" in pins_file.read_text(), 5)


def test_pins_file_ignores_bad_lines_and_keeps_comments(tmp_path: Path) -> None:
    key = _identity().public_key
    path = tmp_path / "known_hosts"
    path.write_text(f"# mine\nb ed25519 {key}\n../x ed25519 {key}\nc rsa {key}\nd ed25519 zz\n")
    store = PinStore(path)
    store.load()
    assert store.get("b") == key
    assert len(store) == 1
    assert store.pin("e", key)
    assert not store.pin("b", _identity().public_key), "a pinned name keeps its key"
    asyncio.run(store.flush())
    text = path.read_text()
    assert text.startswith("# mine\n")
    assert text.endswith(f"e ed25519 {key}\n")


def test_a_stale_record_of_an_unpinned_name_is_skipped_quietly(tmp_path: Path) -> None:
    me = _identity()
    trust = RecordTrust(me, PinStore(tmp_path / "known_hosts"))
    table = PeerTable(_signed(me, "a", 1), 5.0, trust=trust)
    old = _signed(_identity(), "b", 2).replace(last_seen=time.time() - 60)
    result = table.merge([old], time.time())
    assert "b" not in table
    assert [r.kind for r in result.refused] == [RefusalKind.STALE_UNPINNED]
    assert result.refused[0].quiet
    assert trust.pins.get("b") is None


def test_verification_runs_once_per_change_of_a_record(tmp_path: Path) -> None:
    me, other = _identity(), _identity()
    trust = RecordTrust(me, PinStore(tmp_path / "known_hosts"))
    now = [1000.0]
    table = PeerTable(_signed(me, "a", 1), 4.0, trust=trust, clock=lambda: now[0])
    record = _signed(other, "b", 2)
    for _ in range(5):  # the same news relayed by five peers
        table.merge([record], time.time())
    assert trust.verified == 1
    # a newer heartbeat, nothing else changed, soon after: freshness only, no check
    table.merge([other.sign(record.replace(heartbeat=1, last_seen=time.time()))], time.time())
    assert trust.verified == 1
    assert table.get("b").heartbeat == 0
    # anything else changed: checked and taken at once
    changed = other.sign(record.replace(heartbeat=2, paglets=3, last_seen=time.time()))
    table.merge([changed], time.time())
    assert trust.verified == 2
    assert table.get("b").paglets == 3
    # offline_after / 2 later, a beat is checked and taken again
    now[0] += 2.0
    table.merge([other.sign(changed.replace(heartbeat=3, last_seen=time.time()))], time.time())
    assert trust.verified == 3
    assert table.get("b").heartbeat == 3
    # a forged beat is never checked soon after, and never taken
    forged = changed.replace(heartbeat=10**15, last_seen=time.time())
    table.merge([forged], time.time())
    assert table.get("b").heartbeat == 3
    now[0] += 2.0
    result = table.merge([forged], time.time())
    assert [r.kind for r in result.refused] == [RefusalKind.BAD_SIGNATURE]
    assert table.get("b").heartbeat == 3


# -- item 7: discovery, and the hello ---------------------------------------------------


class Recorder:
    """A tiny HTTP server that does not know the mesh key, and records what it gets."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path, dict(request.headers)))
        if request.path == "/v1/mesh/hello":
            hello = await request.json()
            reply = HelloReply("intruder", new_nonce(), new_nonce())  # a guessed proof
            assert hello["nonce"]
            return web.json_response(reply.to_dict())
        intruder = _signed(_identity(), "intruder", self.port).to_dict()
        return web.json_response({"sent_at": time.time(), "hosts": [intruder]})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    """A recording server that outlives the test's hosts.

    Tests take it before ``make_host``: a host still calling it while aiohttp stops
    would leave an accepted socket open.
    """
    rec = Recorder()
    await rec.start()
    try:
        yield rec
    finally:
        assert rec.runner is not None
        await rec.runner.cleanup()


async def test_a_discovered_stranger_never_gets_the_key_nor_into_the_table(
    recorder: Recorder, make_host: Callable[..., Awaitable[Host]]
) -> None:
    tag = uuid.uuid4().hex[:8]
    zc = {"discovery": True, "discovery_interfaces": ("127.0.0.1",), **FAST}
    a = await make_host(name=f"zc-a-{tag}", **zc)
    fake = Announcement(f"intruder-{tag}", recorder.url, "dev", 1)
    announcer = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    try:
        await announcer.async_register_service(service_info(fake, "127.0.0.1", recorder.port))
        discovery = a.mesh.discovery
        assert discovery is not None
        await wait_for(lambda: fake.name in discovery.found, 15, "a found the announcement")
        await wait_for(lambda: bool(recorder.requests), 10, "a said hello to the stranger")
        gossiper = a.mesh.gossiper
        assert gossiper is not None
        await wait_for(lambda: recorder.url not in gossiper._candidates, 10, "stranger dropped")
    finally:
        await announcer.async_close()
    assert [(m, p) for m, p, _ in recorder.requests] == [("POST", "/v1/mesh/hello")]
    for _, _, headers in recorder.requests:
        assert "Authorization" not in headers
        assert KEY not in json.dumps(headers)
    assert {h.name for h in a.mesh.hosts()} == {a.name}
    assert not a.mesh.is_proven(recorder.url)


async def test_keyed_hosts_discover_each_other_through_the_hello(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    tag = uuid.uuid4().hex[:8]
    zc = {"discovery": True, "discovery_interfaces": ("127.0.0.1",), **FAST}
    a = await make_host(name=f"zk-a-{tag}", **zc)
    b = await make_host(name=f"zk-b-{tag}", **zc)
    await wait_for(lambda: b.name in a.mesh.table and a.name in b.mesh.table, 15, "met")
    assert a.mesh.is_proven(b.url) or b.mesh.is_proven(a.url)


async def test_a_hello_is_answered_only_for_the_hosts_own_url(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    b = await make_host(name="b", **FAST)
    hello = Hello("a", b.url, new_nonce())
    status, body = await _post(b.url, "/v1/mesh/hello", hello.to_dict(), {})
    assert status == 200, body
    reply = HelloReply.from_dict(body)
    assert reply.name == "b"
    assert is_proven(hello_key(KEY), hello, reply)
    assert not is_proven(hello_key("another key"), hello, reply)
    # a hello relayed by a stranger names the stranger's URL: refused
    relayed = Hello("a", "http://127.0.0.9:4242", new_nonce())
    status, body = await _post(b.url, "/v1/mesh/hello", relayed.to_dict(), {})
    assert status == 400
    assert "does not answer on http://127.0.0.9:4242" in body["error"]["message"]
    status, body = await _post(b.url, "/v1/mesh/hello", {"name": "a", "url": b.url}, {})
    assert status == 400


async def test_a_host_without_the_key_is_never_sent_it(
    recorder: Recorder, make_host: Callable[..., Awaitable[Host]]
) -> None:
    a = await make_host(name="a", peers=(recorder.url,), **FAST)
    await wait_for(lambda: len(recorder.requests) >= 3, 10, "a retried the seed")
    assert {p for _, p, _ in recorder.requests} == {"/v1/mesh/hello"}
    assert all("Authorization" not in h for _, _, h in recorder.requests)
    assert "intruder" not in a.mesh.table


def test_the_identity_directory_is_made_private_even_when_it_exists(tmp_path: Path) -> None:
    directory = tmp_path / "mesh"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    HostIdentity.load_or_create(directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
