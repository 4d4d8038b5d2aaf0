"""The resource snapshot every host record carries, and picking hosts by it.

`HostResources` is checked field by field where the wire brings it; the
sampler reads this machine; `select` keeps the hosts that meet every
constraint, best first. The commands and a paglet use it on real hosts in
``tests/test_builtin_info.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import psutil
import pytest

from paglets.core.errors import ProtocolError, RequestError
from paglets.mesh.resources import ResourceSampler, sample
from paglets.wire.mesh import HostRecord
from paglets.wire.resources import HostResources
from paglets.wire.targets import Target, TargetQuery, select

# -- the snapshot, as the wire carries it ----------------------------------------------------


def _resources(**changes: Any) -> dict[str, Any]:
    data = sample(Path.cwd(), 1, 2).to_dict()
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"cpu_count": 0}, "'cpu_count' must be at least 1"),
        ({"cpu_count": True}, "'cpu_count' must be an integer"),
        ({"load_1": -1.0}, r"'load_1' is -1\.0; expected 0\.\."),
        ({"load_5": 1e300}, r"'load_5' is 1e\+300"),
        ({"load_15": float("nan")}, "'load_15' is nan"),
        ({"memory_total": 1.5}, "'memory_total' must be an integer"),
        ({"disk_free": 2**63}, "'disk_free' is 9223372036854775808"),
        ({"paglets_active": "3"}, "'paglets_active' must be an integer"),
        ({"extra": 1}, "must be an object of exactly"),
    ],
)
def test_resources_from_the_wire_are_checked_field_by_field(
    changes: dict[str, Any], error: str
) -> None:
    with pytest.raises(ProtocolError, match=error):
        HostResources.from_dict(_resources(**changes))


def test_a_host_record_carries_its_resources_and_refuses_bad_ones() -> None:
    res = HostResources.from_dict(_resources(load_1=3))
    assert res.load_1 == 3.0
    assert type(res.load_1) is float, "an integer load is read as a float, as signed"
    record = HostRecord("alpha", "http://127.0.0.1:1", "dev", 1, "0.1", resources=res)
    data = record.to_dict()
    assert HostRecord.from_dict(data) == record
    assert b'"resources"' in record.signed_bytes(), "the signature covers the snapshot"
    no_snapshot = record.replace(resources=None)
    assert "resources" not in no_snapshot.to_dict(), "older hosts still read the record"
    with pytest.raises(ProtocolError, match="host record field 'resources' field 'swap_used'"):
        HostRecord.from_dict({**data, "resources": {**data["resources"], "swap_used": -1}})
    with pytest.raises(ProtocolError, match="'resources' must be null or an object"):
        HostRecord.from_dict({**data, "resources": [1]})


def test_the_sampler_reads_this_machine_and_reuses_a_fresh_sample(tmp_path: Path) -> None:
    counts = [(1, 2)]
    sampler = ResourceSampler(tmp_path, lambda: counts[0], every=60)
    first = sampler()
    usage = psutil.disk_usage(str(tmp_path))
    assert first.cpu_count == len(os.sched_getaffinity(0))
    assert first.memory_total == psutil.virtual_memory().total
    assert first.disk_total == usage.total
    assert abs(first.disk_free - usage.free) < 1 << 30
    assert (first.paglets_active, first.paglets_inactive) == (1, 2)
    counts[0] = (3, 0)
    second = sampler()
    assert (second.paglets_active, second.paglets_inactive) == (3, 0), "counts are of now"
    assert second.memory_available == first.memory_available, "the system is not read again"


# -- choosing targets ------------------------------------------------------------------------


def _record(name: str, *, load: float, memory: int, disk: int, tags: list[str]) -> HostRecord:
    res = HostResources(2, load, load, load, 8 << 30, memory, 0, 0, 100 << 30, disk, 0, 0)
    return HostRecord(name, f"http://{name}:1", "dev", 1, "0.1", tags=tags, resources=res)


def test_targets_meet_every_constraint_and_come_best_first() -> None:
    records = [
        _record("a", load=1.0, memory=4 << 30, disk=50 << 30, tags=["gpu"]),
        _record("b", load=0.2, memory=1 << 30, disk=90 << 30, tags=[]),
        _record("c", load=0.2, memory=6 << 30, disk=10 << 30, tags=["gpu", "lab"]),
        _record("d", load=3.0, memory=7 << 30, disk=99 << 30, tags=["gpu"]),
        _record("e", load=0.0, memory=8 << 30, disk=99 << 30, tags=["gpu"]).replace(online=False),
        HostRecord("f", "http://f:1", "dev", 1, "0.1"),  # publishes no resources
    ]
    names = lambda **q: [t.name for t in select(records, TargetQuery(**q))]  # noqa: E731
    assert names() == ["c", "b", "a", "d"], "least load per CPU, then most memory"
    assert names(max_load_per_cpu=0.5) == ["c", "b", "a"]
    assert names(min_free_memory=4 << 30) == ["c", "a", "d"]
    assert names(min_free_disk=50 << 30) == ["b", "a", "d"]
    assert names(tags=("gpu",)) == ["c", "a", "d"]
    assert names(tags=("gpu", "lab")) == ["c"]
    assert names(tags=("gpu",), min_free_disk=60 << 30) == ["d"]
    assert names(limit=2) == ["c", "b"]
    (best,) = select(records, TargetQuery(limit=1))
    assert best.rank == 1
    assert best.load_per_cpu == pytest.approx(0.1)
    assert Target.from_dict(json.loads(json.dumps(best.to_dict()))) == best


def test_a_string_of_tags_is_refused_not_split_into_letters() -> None:
    with pytest.raises(RequestError, match="tags must be a list of tags, not 'gpu'"):
        TargetQuery(tags="gpu")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({"max_load_per_cpu": -1}, "max_load_per_cpu must be a number"),
        ({"max_load_per_cpu": "1"}, "max_load_per_cpu must be a number"),
        ({"min_free_memory": 1.5}, "min_free_memory must be a number of bytes"),
        ({"min_free_disk": -1}, "min_free_disk must be a number of bytes"),
        ({"limit": 0}, "limit must be an integer 1..1000"),
        ({"tags": ["x" * 200]}, "tags must be at most 16 strings"),
        ({"tags": "gpu"}, "tags must be a list"),
        ({"near": "beta"}, r"unknown targets constraints \['near'\]"),
    ],
)
def test_a_bad_targets_query_is_refused_naming_it(query: dict[str, Any], error: str) -> None:
    with pytest.raises(RequestError, match=error):
        TargetQuery.from_dict(query)
