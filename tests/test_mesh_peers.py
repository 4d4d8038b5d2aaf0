"""The peer table as a pure state machine, and the host record codec: no sockets."""

from __future__ import annotations

import pytest

from paglets import HostRecord, ProtocolError
from paglets.mesh.gossip import parse_gossip
from paglets.mesh.peers import PeerTable

OFFLINE_AFTER = 5.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(name: str, port: int, *, incarnation: int = 1, heartbeat: int = 0, **kw) -> HostRecord:
    return HostRecord(
        name=name,
        url=f"http://127.0.0.1:{port}",
        mesh_version=kw.pop("mesh_version", "dev"),
        protocol_version=1,
        version="0.1.0",
        incarnation=incarnation,
        heartbeat=heartbeat,
        **kw,
    )


def table(name: str = "a", port: int = 1) -> tuple[PeerTable, Clock]:
    clock = Clock()
    return PeerTable(record(name, port), OFFLINE_AFTER, clock=clock, wall_clock=clock), clock


def sent(*records: HostRecord, at: float, age: float = 0.0) -> tuple[list[HostRecord], float]:
    return [r.replace(last_seen=at - age) for r in records], at


def test_merge_adds_hosts_and_reports_them_once() -> None:
    t, clock = table()
    result = t.merge(*sent(record("b", 2), record("c", 3), at=clock.now))
    assert [(c.name, c.what) for c in result.changes] == [("b", "joined"), ("c", "joined")]
    assert [h.name for h in t.hosts()] == ["a", "b", "c"]
    assert all(h.online for h in t.hosts())
    again = t.merge(*sent(record("b", 2), at=clock.now))
    assert again.changes == []


def test_age_comes_from_the_senders_clock_not_ours() -> None:
    t, clock = table()
    # The sender's clock is an hour ahead; the record is 1 s old in its clock.
    t.merge(*sent(record("b", 2), at=clock.now + 3600, age=1.0))
    b = t.get("b")
    assert b is not None
    assert b.online
    assert b.last_seen == pytest.approx(clock.now - 1.0)


def test_heartbeat_age_marks_offline_then_online_again() -> None:
    t, clock = table()
    t.merge(*sent(record("b", 2, heartbeat=1), at=clock.now))
    clock.now += OFFLINE_AFTER - 0.1
    assert t.sweep() == []
    clock.now += 0.2
    assert [(c.name, c.what) for c in t.sweep()] == [("b", "offline")]
    assert t.get("b").online is False
    assert t.get("a").online, "a host is always online to itself"
    # Old news relayed by a peer (as old there) does not revive it; a newer heartbeat does.
    t.merge(*sent(record("b", 2, heartbeat=1), at=clock.now, age=OFFLINE_AFTER + 0.1))
    assert t.get("b").online is False
    t.merge(*sent(record("b", 2, heartbeat=2), at=clock.now))
    assert [(c.name, c.what) for c in t.sweep()] == [("b", "online")]


def test_stale_news_never_beats_fresher_news() -> None:
    t, clock = table()
    t.merge(*sent(record("b", 2, heartbeat=5, paglets=3), at=clock.now))
    t.merge(*sent(record("b", 2, heartbeat=4, paglets=9), at=clock.now))
    assert t.get("b").paglets == 3
    assert t.get("b").heartbeat == 5


def test_a_restart_on_the_same_url_is_the_same_host() -> None:
    t, clock = table()
    t.merge(*sent(record("b", 2, incarnation=1, heartbeat=50), at=clock.now))
    result = t.merge(*sent(record("b", 2, incarnation=2, heartbeat=0), at=clock.now))
    assert result.duplicates == []
    assert t.get("b").incarnation == 2


def test_a_rebind_keeps_the_incarnation_and_moves_the_url() -> None:
    t, clock = table()
    t.merge(*sent(record("b", 2, incarnation=7, heartbeat=1), at=clock.now))
    moved = record("b", 2, incarnation=7, heartbeat=2).replace(url="http://10.0.0.9:2")
    result = t.merge(*sent(moved, at=clock.now))
    assert [(c.name, c.what, c.url) for c in result.changes] == [
        ("b", "moved", "http://10.0.0.9:2")
    ]
    assert t.find_url("http://10.0.0.9:2").name == "b"


def test_a_duplicate_name_keeps_the_first_live_host() -> None:
    t, clock = table()
    t.merge(*sent(record("b", 2, incarnation=1), at=clock.now))
    result = t.merge(*sent(record("b", 9, incarnation=2), at=clock.now))
    assert [(d.name, d.kept_url, d.refused_url) for d in result.duplicates] == [
        ("b", "http://127.0.0.1:2", "http://127.0.0.1:9")
    ]
    assert t.get("b").url == "http://127.0.0.1:2"


def test_someone_else_claiming_our_name_is_a_duplicate() -> None:
    t, clock = table("a", 1)
    result = t.merge(*sent(record("a", 9, incarnation=2), at=clock.now))
    assert [(d.kept_url, d.refused_url) for d in result.duplicates] == [
        ("http://127.0.0.1:1", "http://127.0.0.1:9")
    ]
    assert t.me.url == "http://127.0.0.1:1"
    # A stale record of our name (a dead host) is not a conflict.
    assert t.merge(*sent(record("a", 8, incarnation=3), at=clock.now, age=60)).duplicates == []


def test_an_offline_host_is_replaced_by_a_newcomer_of_its_name() -> None:
    t, clock = table()
    t.merge(*sent(record("b", 2, incarnation=1), at=clock.now))
    clock.now += OFFLINE_AFTER + 1
    t.sweep()
    result = t.merge(*sent(record("b", 9, incarnation=2), at=clock.now))
    assert result.duplicates == []
    assert [(c.name, c.what) for c in result.changes] == [("b", "replaced")]
    assert t.get("b").url == "http://127.0.0.1:9"
    assert t.get("b").online


def test_beat_increments_our_heartbeat() -> None:
    t, _ = table()
    assert t.beat(paglets=4).heartbeat == 1
    assert t.me.heartbeat == 1
    assert t.me.paglets == 4
    assert "hosts=1 online=1" in repr(t)


# -- the record codec -------------------------------------------------------------


def test_host_record_round_trips() -> None:
    r = record(
        "b", 2, tags=["gpu"], properties={"zone": "a"}, commit="abc", urls=["http://10.0.0.2:2"]
    )
    assert HostRecord.from_dict(r.to_dict()) == r
    assert r["online"] is True


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"Extra": 1}, "unknown host record field 'Extra'"),
        ({"online": "yes"}, "'online' must be a boolean"),
        ({"heartbeat": True}, "'heartbeat' must be an integer"),
        ({"tags": ["a", 1]}, "'tags' must be a list of strings"),
        ({"properties": {"k": 1}}, "'properties' must be an object of strings"),
        ({"name": ""}, "'name' must be a non-empty string"),
    ],
)
def test_host_record_is_strict(change: dict, message: str) -> None:
    data = record("b", 2).to_dict() | change
    with pytest.raises(ProtocolError, match=message.replace("[", r"\[").replace("]", r"\]")):
        HostRecord.from_dict(data)


def test_host_record_requires_its_identity() -> None:
    data = record("b", 2).to_dict()
    del data["mesh_version"]
    with pytest.raises(ProtocolError, match="lacks fields"):
        HostRecord.from_dict(data)


def test_gossip_body_is_strict() -> None:
    with pytest.raises(ProtocolError):
        parse_gossip({"hosts": []})
    with pytest.raises(ProtocolError):
        parse_gossip({"sent_at": "now", "hosts": []})
    assert parse_gossip({"sent_at": 1, "hosts": [record("b", 2).to_dict()]})[0] == 1.0


def test_a_long_dead_host_is_forgotten_and_stays_forgotten() -> None:
    clock = Clock()
    t = PeerTable(record("a", 1), OFFLINE_AFTER, forget_after=60, clock=clock, wall_clock=clock)
    t.merge(*sent(record("b", 2, heartbeat=3), at=clock.now))
    clock.now += 61
    assert [(c.name, c.what) for c in t.sweep()] == [("b", "forgotten")]
    assert "b" not in t
    # A peer that still has the old record cannot bring it back.
    assert t.merge(*sent(record("b", 2, heartbeat=3), at=clock.now, age=61)).changes == []
    assert "b" not in t
    # A fresh heartbeat does.
    t.merge(*sent(record("b", 2, heartbeat=4), at=clock.now))
    assert t.get("b").online
