"""Hosts of two versions in one mesh: a record field of newer code is kept and passed on.

A mesh is updated one host at a time (auto-update, or an operator's rollout), so
for a while hosts of newer code, whose records carry a field older code does not
know, gossip with hosts of older code. The older host keeps that field as it came,
checks the signature over it, passes it on, and otherwise ignores it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from paglets import EventKind, HostRecord, ProtocolError
from paglets.mesh.identity import HostIdentity, verify
from paglets.transport.client import AsyncHostClient
from paglets.wire.mesh import MAX_EXTRA_FIELDS
from tests.conftest import wait_for

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from paglets import Host

KEY = "s3cret-mesh-key"
FAST = {"gossip_interval": 0.1, "offline_after": 30.0, "warm_children": 0, "api_key": KEY}
GPU = {"count": 2, "model": "L4", "memory": [24, 24]}


def _newer(identity: HostIdentity, name: str = "newer", **extra: Any) -> HostRecord:
    """The record of a host of newer code: a field this code does not know, signed."""
    record = HostRecord(
        name=name,
        url="http://127.0.0.1:7",
        mesh_version="dev",
        protocol_version=1,
        version="9.0.0",
        incarnation=time.time_ns() // 1000,
        last_seen=time.time(),
        extra=extra or {"gpu": GPU},
    )
    return identity.sign(record)


def test_a_new_field_is_signed_after_the_known_ones_in_name_order() -> None:
    identity = HostIdentity(Ed25519PrivateKey.generate())
    record = _newer(identity, zeta=1, gpu=GPU)
    known = record.replace(extra={}).signed_bytes()
    # what code that knows the fields would sign: each as a one-key object, by name
    expected = known[:-1] + b',{"gpu":{"count":2,"memory":[24,24],"model":"L4"}},{"zeta":1}]'
    assert record.signed_bytes() == expected


def test_a_record_with_a_field_of_newer_code_is_read_verified_and_written_back() -> None:
    identity = HostIdentity(Ed25519PrivateKey.generate())
    wire = _newer(identity).to_dict()
    assert wire["gpu"] == GPU
    record = HostRecord.from_dict(wire)
    assert record.extra == {"gpu": GPU}
    assert verify(record), "the signature covers the new field and checks out here"
    assert HostRecord.from_dict(record.to_dict()) == record
    forged = HostRecord.from_dict(wire | {"gpu": {**GPU, "count": 8}})
    assert not verify(forged), "a relaying host cannot change a field it does not know"
    dropped = HostRecord.from_dict({k: v for k, v in wire.items() if k != "gpu"})
    assert not verify(dropped), "nor drop it"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"Bad-Name": 1}, "unknown host record field 'Bad-Name'"),
        ({"x" * 65: 1}, "at most 64"),
        ({f"f{i}": i for i in range(MAX_EXTRA_FIELDS + 1)}, "the limit is 16"),
        ({"blob": "x" * 5_000}, "the limit is 4096"),
    ],
)
def test_fields_of_newer_code_are_bounded(extra: dict[str, Any], message: str) -> None:
    wire = _newer(HostIdentity(Ed25519PrivateKey.generate())).to_dict() | extra
    with pytest.raises(ProtocolError, match=message):
        HostRecord.from_dict(wire)


async def test_an_older_host_passes_a_newer_hosts_record_on_unchanged(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    a = await make_host(name="a", **FAST)
    b = await make_host(name="b", peers=(a.url,), **FAST)
    await wait_for(lambda: "b" in a.mesh.table and "a" in b.mesh.table, 10, "a and b met")
    newer = _newer(HostIdentity(Ed25519PrivateKey.generate()))
    body = {"sent_at": time.time(), "hosts": [newer.to_dict()]}
    headers = {"Authorization": f"Bearer {KEY}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{a.url}/v1/mesh/gossip", json=body, headers=headers) as resp,
    ):
        assert resp.status == 200, await resp.text()
    await wait_for(lambda: "newer" in b.mesh.table, 10, "b heard of the newer host from a")
    assert b.mesh.lookup("newer").extra == {"gpu": GPU}
    refused = [e.data for e in b.events.query(kinds=[EventKind.MESH_RECORD_REFUSED])]
    assert not refused, "b verified the newer host's signature, new field and all"
    async with AsyncHostClient(b.url, KEY) as client:
        listed = {r.name: r for r in await client.hosts()}
    assert listed["newer"].extra == {"gpu": GPU}
    assert listed["b"].extra == {}
