"""The pure admission logic of compute slots (`paglets.services.compute.slots`)."""

from __future__ import annotations

import random

import pytest

from paglets.services.compute.contract import HostSlots
from paglets.services.compute.placement import Candidate, choose
from paglets.services.compute.slots import Job, JobStatus, Reason, Resources, SlotTable

G = 1 << 30


def job(
    job_id: str, who: str = "ana", cores: int = 1, ram: int = G, tmp: int = 0, **kw: object
) -> Job:
    return Job(job_id, f"agent-{job_id}", who, Resources(cores, ram, tmp), **kw)  # type: ignore[arg-type]


def ids(jobs: list[Job]) -> list[str]:
    return [j.job_id for j in jobs]


def test_jobs_start_while_cores_ram_and_tmp_fit_and_the_rest_wait() -> None:
    table = SlotTable(Resources(4, 8 * G, 10 * G), cpu_ids=(0, 1, 2, 3))
    assert ids(table.submit(job("a", cores=2), 0)) == ["a"]
    assert table.running["a"].cpus == (0, 1)
    assert ids(table.submit(job("b", ram=8 * G), 1)) == []
    blocker = table.why("b", 1)
    assert blocker is not None
    assert (blocker.reason, blocker.detail) == (Reason.RESOURCES, "ram")
    assert ids(table.submit(job("c", tmp=20 * G), 2)) == []
    assert table.infeasible(Resources(1, G, 20 * G)) == ["tmp"]
    assert ids(table.release("a", 3)) == ["b"], "the release admits the next, FIFO"
    assert table.history[-1].status is JobStatus.DONE
    table.check()


def test_a_job_behind_a_blocked_one_waits_with_reason_priority() -> None:
    table = SlotTable(Resources(4, 8 * G, 0))
    table.submit(job("a", cores=3), 0)
    table.submit(job("big", cores=4, priority=5), 1)
    table.submit(job("small", who="bo", cores=1), 2)
    assert "small" in table.pending, "no backfill past the job whose turn it is"
    small = table.why("small", 3)
    assert small is not None
    assert small.reason is Reason.PRIORITY
    assert (small.position, small.queued) == (2, 2)
    big = table.why("big", 3)
    assert big is not None
    assert big.reason is Reason.RESOURCES


def test_the_load_gate_holds_jobs_until_the_load_falls() -> None:
    table = SlotTable(Resources(4, 8 * G, 0), max_load_per_cpu=1.0)
    table.set_load(1.5, 0)
    assert table.submit(job("a"), 0) == []
    blocker = table.why("a", 0)
    assert blocker is not None
    assert blocker.reason is Reason.LOAD_GATE
    assert blocker.detail == "load/cpu 1.50 > 1.00"
    assert ids(table.set_load(0.5, 1)) == ["a"]


def test_a_group_limit_skips_its_jobs_but_not_others() -> None:
    table = SlotTable(Resources(8, 8 * G, 0))
    table.submit(job("g1", group="g", group_limit=1), 0)
    table.submit(job("g2", group="g", group_limit=1), 0)
    assert ids(table.submit(job("x"), 0)) == ["x"]
    blocker = table.why("g2", 0)
    assert blocker is not None
    assert blocker.reason is Reason.GROUP_LIMIT
    assert ids(table.release("g1", 1)) == ["g2"]


def test_submitters_take_turns_weighted_by_recent_usage() -> None:
    table = SlotTable(Resources(1, 8 * G, 0))
    for n in range(4):
        table.submit(job(f"ana{n}", "ana"), 0)
    for n in range(4):
        table.submit(job(f"bo{n}", "bo"), 0)
    order = ["ana0"]
    now = 0.0
    while table.running:
        (running,) = table.running
        now += 1
        order += ids(table.release(running, now))
    assert order == ["ana0", "bo0", "ana1", "bo1", "ana2", "bo2", "ana3", "bo3"]


def test_priority_goes_before_fairness_and_fifo_holds_within_a_submitter() -> None:
    table = SlotTable(Resources(1, 8 * G, 0))
    table.submit(job("first"), 0)
    table.submit(job("a1"), 0)
    table.submit(job("a2"), 0)
    table.submit(job("urgent", "bo", priority=10), 0)
    assert ids(table.order(0)) == ["urgent", "a1", "a2"]


def test_releases_are_idempotent_and_cancelling_a_pending_job_frees_nothing() -> None:
    table = SlotTable(Resources(2, 2 * G, 0))
    table.submit(job("a", cores=2), 0)
    table.submit(job("b", cores=2), 0)
    assert table.release("b", 1, JobStatus.CANCELLED) == []
    assert table.release("b", 1) == []
    assert ids(table.release("a", 2, JobStatus.KILLED)) == []
    assert table.free == table.total
    table.check()


@pytest.mark.parametrize("seed", range(20))
def test_free_plus_allocated_is_total_after_every_step_of_a_random_run(seed: int) -> None:
    rng = random.Random(seed)  # noqa: S311 - a reproducible run, not a secret
    total = Resources(8, 16 * G, 32 * G)
    table = SlotTable(total, cpu_ids=tuple(range(8)), max_load_per_cpu=1.0)
    known: list[str] = []
    now = 0.0
    for step in range(400):
        now += rng.random()
        action = rng.choice(("submit", "submit", "finish", "kill", "cancel", "load"))
        if action == "submit":
            request = Resources(rng.randint(0, 8), rng.randint(0, 16) * G, rng.randint(0, 32) * G)
            if table.infeasible(request):
                continue
            name = f"j{step}"
            known.append(name)
            table.submit(
                Job(
                    name,
                    f"agent-{name}",
                    rng.choice(("ana", "bo", "cy")),
                    request,
                    priority=rng.choice((0, 0, 5)),
                    group=rng.choice(("", "g")),
                    group_limit=2,
                ),
                now,
            )
        elif action == "load":
            table.set_load(rng.choice((0.2, 0.9, 1.4)), now)
        elif known:
            status = {"finish": JobStatus.DONE, "kill": JobStatus.KILLED}.get(
                action, JobStatus.CANCELLED
            )
            table.release(rng.choice(known), now, status)
        table.check()
        used = [c for j in table.running.values() for c in j.cpus]
        assert len(used) == len(set(used)), "a CPU pinned to two jobs"
        if not table._gated():
            nxt = table._next(now)
            assert nxt is None or not nxt.request.fits_in(table.free)


def slots(name: str, cores: int, free: int, load: float = 0.1) -> HostSlots:
    return HostSlots(name, cores, 8 * G, 8 * G, free, 8 * G, 8 * G, load, 1.0, 0, 0)


def test_placement_stays_queues_or_redirects_as_the_job_asks() -> None:
    busy, idle = slots("ada", 4, 0), slots("bob", 8, 8)
    hosts = [Candidate("ada", (), busy), Candidate("bob", ("big",), idle)]
    ask = {"cores": 2, "ram": G, "tmp": 0}
    assert choose("ada", hosts, **ask) is None, "queue: waits on its own host"
    assert choose("ada", hosts, **ask, on_busy="redirect") == "bob"
    assert choose("ada", hosts, **ask, required=["big"]) == "bob", "only bob has the tag"
    assert choose("bob", hosts, **ask, required=["big"]) is None
    assert choose("ada", hosts, cores=16, ram=G, tmp=0, on_busy="redirect") is None, "too big"
    gated = [Candidate("ada", (), busy), Candidate("bob", (), slots("bob", 8, 8, load=3.0))]
    assert choose("ada", gated, **ask, on_busy="redirect") is None, "no host can start it now"
    idle_here = [Candidate("ada", (), slots("ada", 4, 4)), Candidate("bob", ("fast",), idle)]
    assert choose("ada", idle_here, **ask, on_busy="redirect") is None
    assert choose("ada", idle_here, **ask, on_busy="redirect", preferred=["fast"]) == "bob"
    assert choose("ada", [Candidate("ada", (), None)], **ask, on_busy="redirect") is None
