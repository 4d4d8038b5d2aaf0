"""What one gossip exchange costs a host's event loop, by table size.

::

    uv run python bench/gossip_round.py                # tables of 10, 100 and 1000 hosts
    uv run python bench/gossip_round.py --hosts 50 --rounds 20

In-process, no sockets: the CPU work a host does on its loop for one exchange
with a peer whose table holds N hosts, median of ``--rounds``:

- *encode*: our table as the JSON body we send (`PeerTable.gossip`, signing our
  own record when it changed).
- *decode*: a peer's body of N records back into `HostRecord` s (validation included).
- *merge, beats*: merging N records that each carry a newer heartbeat and
  nothing else new (every host beat since the last exchange). A host's
  signature is checked about twice per ``--offline-after``, not per beat.
- *merge, all checked*: the same, when every host's signature is due for a
  check (the worst case: one Ed25519 verification per record).
- *merge, old news*: merging the same N records again (what a second peer
  relays in the same round).

The same script runs on a checkout from before host identities (no
``paglets.mesh.trust``): it then measures unsigned records, for a before/after
comparison run by run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from paglets.mesh.gossip import gossip_body, parse_gossip
from paglets.mesh.peers import PeerTable
from paglets.wire.mesh import HostRecord

try:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from paglets.mesh.identity import HostIdentity
    from paglets.mesh.pins import PinStore
    from paglets.mesh.trust import RecordTrust
except ImportError:  # before host identities
    RecordTrust = None  # type: ignore[assignment,misc]

_dumps = json.JSONEncoder(separators=(",", ":")).encode


def _record(i: int, heartbeat: int, incarnation: int) -> HostRecord:
    return HostRecord(
        name=f"host-{i}",
        url=f"http://10.0.{i // 250}.{i % 250 + 1}:8765",
        mesh_version="dev",
        protocol_version=1,
        version="0.1.0",
        tags=["gpu"] if i % 3 == 0 else [],
        properties={"zone": "a"},
        urls=[f"http://10.0.{i // 250}.{i % 250 + 1}:8765"],
        incarnation=incarnation,
        heartbeat=heartbeat,
        last_seen=time.time(),
    )


def _ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.2f}"


def measure(n: int, rounds: int, tmp: Path) -> dict[str, Any]:
    incarnation = time.time_ns() // 1000
    signers: list[Any] = []
    trust = None
    if RecordTrust is not None:
        signers = [HostIdentity(Ed25519PrivateKey.generate()) for _ in range(n)]
        trust = RecordTrust(signers[0], PinStore(tmp / f"pins-{n}"))

    def records(heartbeat: int) -> list[HostRecord]:
        out = [_record(i, heartbeat, incarnation) for i in range(n)]
        return [s.sign(r) for s, r in zip(signers, out, strict=True)] if signers else out

    kwargs: dict[str, Any] = {"trust": trust} if trust is not None else {}
    me = _record(0, 0, incarnation)
    table = PeerTable(me, 5.0, **kwargs)
    table.merge(records(0)[1:], time.time())
    now = [0.0]
    due = PeerTable(me, 5.0, clock=lambda: now[0], **kwargs)  # every check is due
    due.merge(records(0)[1:], time.time())
    encode, decode, merge_new, merge_old, merge_due = [], [], [], [], []
    for beat in range(1, rounds + 1):
        peer_body = _dumps(gossip_body(time.time(), records(beat)[1:]))  # the peer's work
        t0 = time.perf_counter()
        table.beat(paglets=beat % 2)
        _dumps(gossip_body(*table.gossip()))
        t1 = time.perf_counter()
        sent_at, decoded = parse_gossip(json.loads(peer_body))
        t2 = time.perf_counter()
        table.merge(decoded, sent_at)
        t3 = time.perf_counter()
        table.merge(decoded, sent_at)
        t4 = time.perf_counter()
        now[0] += 5.0
        due.merge(decoded, sent_at)
        merge_due.append(time.perf_counter() - t4)
        encode.append(t1 - t0)
        decode.append(t2 - t1)
        merge_new.append(t3 - t2)
        merge_old.append(t4 - t3)
    return {
        "hosts": n,
        "encode": _ms(encode),
        "decode": _ms(decode),
        "merge, beats": _ms(merge_new),
        "merge, all checked": _ms(merge_due),
        "merge, old news": _ms(merge_old),
        "total": _ms([a + b + c for a, b, c in zip(encode, decode, merge_new, strict=True)]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, action="append", help="table sizes (repeatable)")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    sizes = args.hosts or [10, 100, 1000]
    kind = "signed records (after)" if RecordTrust is not None else "unsigned records (before)"
    print(f"gossip exchange cost, {kind}; median of {args.rounds} rounds", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(n, args.rounds, Path(tmp)) for n in sizes]
    keys = list(rows[0])
    print(f"\n{kind}, ms per exchange\n")
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
