"""The host's durable store: the transfer journal, paglet records, the event log.

Every test uses real SQLite files under tmp_path; the crash test SIGKILLs a real
process, and the full-disk tests fill a real (small) tmpfs.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from paglets.core.errors import StorageError, TransferError
from paglets.core.events import EventKind
from paglets.persistence.events import EventLog
from paglets.persistence.files import QUARANTINE_DIR, quarantine, write_atomic
from paglets.persistence.store import (
    SCHEMA_VERSION,
    AsyncStore,
    PagletRecord,
    Store,
    TransferPhase,
    TransferRecord,
    TransferRole,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[1]
SOURCE, TARGET = TransferRole.SOURCE, TransferRole.TARGET


def _source(transfer_id: str = "t1", agent_id: str = "a1") -> TransferRecord:
    return TransferRecord(transfer_id, SOURCE, agent_id, "dispatch", TransferPhase.SENDING, "beta")


def _target(transfer_id: str = "t1", agent_id: str = "a1") -> TransferRecord:
    return TransferRecord(
        transfer_id, TARGET, agent_id, "dispatch", TransferPhase.COMMITTED, "alpha", "/env/t1"
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "paglets.db") as opened:
        yield opened


def _raw(path: Path, sql: str, params: tuple[object, ...] = ()) -> None:
    """Change the database behind the store's back, as damage would."""
    db = sqlite3.connect(path)
    try:
        with db:
            db.execute(sql, params)
    finally:
        db.close()


# -- the transfer journal -----------------------------------------------------


def test_source_row_walks_its_phases_and_merges_detail(store: Store) -> None:
    store.begin_source(_source())
    row = store.set_phase("t1", SOURCE, TransferPhase.IN_DOUBT, {"error": "timeout"})
    assert row.phase is TransferPhase.IN_DOUBT
    row = store.set_phase("t1", SOURCE, TransferPhase.COMMITTED, {"answer": "ok"})
    assert row.detail == {"error": "timeout", "answer": "ok"}
    stored = store.get_transfer("t1", SOURCE)
    assert stored == row
    assert stored.created <= stored.updated
    assert store.get_transfer("t1", TARGET) is None
    assert store.transfers(SOURCE, [TransferPhase.COMMITTED]) == [row]
    assert store.transfers(SOURCE, [TransferPhase.SENDING, TransferPhase.IN_DOUBT]) == []
    assert store.transfers(TARGET) == []


def test_journal_refuses_what_cannot_be(store: Store) -> None:
    store.begin_source(_source())
    with pytest.raises(StorageError, match="already has a source row"):
        store.begin_source(_source())
    with pytest.raises(StorageError, match="no target row for transfer t1"):
        store.set_phase("t1", TARGET, TransferPhase.STARTED)
    with pytest.raises(ValueError, match="not a phase of a source row"):
        store.set_phase("t1", SOURCE, TransferPhase.STARTED)
    with pytest.raises(ValueError, match="needs a target record"):
        store.commit_target(_source())
    assert store.get_transfer("t1", SOURCE).phase is TransferPhase.SENDING


def test_commit_target_is_idempotent(store: Store) -> None:
    first = store.commit_target(_target())
    assert first.phase is TransferPhase.COMMITTED
    again = store.commit_target(_target())
    assert again == first
    store.set_phase("t1", TARGET, TransferPhase.STARTED)
    assert store.commit_target(_target()).phase is TransferPhase.STARTED
    assert len(store.transfers(TARGET)) == 1


def test_commit_target_runs_before_only_for_a_new_transfer(store: Store) -> None:
    ran: list[str] = []
    store.commit_target(_target(), before=lambda: ran.append("first"))
    store.commit_target(_target(), before=lambda: ran.append("retry"))
    assert ran == ["first"]


def test_commit_target_commits_nothing_when_before_fails(store: Store) -> None:
    def fail() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        store.commit_target(_target(), before=fail)
    assert store.get_transfer("t1", TARGET) is None
    assert store.commit_target(_target()).phase is TransferPhase.COMMITTED


def test_abort_then_commit_is_refused(store: Store) -> None:
    assert store.abort_target("t1", "a1", peer="alpha") is TransferPhase.ABORTED
    with pytest.raises(TransferError, match="t1 of paglet a1 was aborted by its source alpha"):
        store.commit_target(_target())
    assert store.abort_target("t1", "a1") is TransferPhase.ABORTED
    assert store.get_transfer("t1", TARGET).phase is TransferPhase.ABORTED


def test_commit_then_abort_returns_committed(store: Store) -> None:
    store.commit_target(_target())
    assert store.abort_target("t1", "a1") is TransferPhase.COMMITTED
    store.set_phase("t1", TARGET, TransferPhase.STARTED)
    assert store.abort_target("t1", "a1") is TransferPhase.STARTED
    assert store.get_transfer("t1", TARGET).envelope == "/env/t1"


def test_prune_deletes_old_finished_rows_and_forget_deletes_one(store: Store) -> None:
    for n in range(4):
        store.begin_source(_source(f"t{n}"))
    store.set_phase("t0", SOURCE, TransferPhase.DONE)
    store.set_phase("t1", SOURCE, TransferPhase.FAILED)
    store.abort_target("t2", "a1")
    store.commit_target(_target("t3"))
    assert store.prune_transfers(older_than=time.time() - 3600) == 0
    assert store.prune_transfers(older_than=time.time() + 1) == 3
    left = {(r.transfer_id, r.role, r.phase) for r in store.transfers()}
    assert left == {
        ("t2", SOURCE, TransferPhase.SENDING),
        ("t3", SOURCE, TransferPhase.SENDING),
        ("t3", TARGET, TransferPhase.COMMITTED),
    }
    store.forget_transfer("t3", TARGET)
    store.forget_transfer("t3", TARGET)
    assert store.get_transfer("t3", TARGET) is None


# -- paglet records --------------------------------------------------------------


def test_paglet_records_upsert_list_count_delete(store: Store) -> None:
    store.put_paglet(PagletRecord("a1", "examples.counter:Counter", "inactive", "/e/a1"))
    store.put_paglet(PagletRecord("a2", "examples.counter:Counter", "active", detail={"n": 1}))
    store.put_paglet(PagletRecord("a1", "examples.counter:Counter", "active", None, {"n": 2}))
    assert store.get_paglet("a1") == PagletRecord(
        "a1", "examples.counter:Counter", "active", None, {"n": 2}, store.get_paglet("a1").updated
    )
    assert [r.agent_id for r in store.paglets()] == ["a1", "a2"]
    assert store.paglets("inactive") == []
    assert store.count_paglets() == 2
    assert store.count_paglets("active") == 2
    store.delete_paglet("a1")
    assert store.get_paglet("a1") is None
    assert store.count_paglets() == 1


# -- durability ------------------------------------------------------------------


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "paglets.db"
    with Store(path) as store:
        store.begin_source(_source())
        store.commit_target(_target("t2"))
        store.put_paglet(PagletRecord("a1", "m:C", "inactive"))
        cursor = store.append_event(1.0, EventKind.HOST_STARTED, "alpha", data={"x": 1})
        before = (store.transfers(), store.paglets(), store.events())
    with Store(path) as store:
        assert store.recovered_from is None
        assert (store.transfers(), store.paglets(), store.events()) == before
        assert store.last_event_cursor() == cursor


def test_sync_false_is_normal_and_sync_true_is_full(tmp_path: Path) -> None:
    with Store(tmp_path / "a.db", sync=False) as fast, Store(tmp_path / "b.db") as safe:
        assert fast._db.execute("PRAGMA synchronous").fetchone()[0] == 1
        assert safe._db.execute("PRAGMA synchronous").fetchone()[0] == 2
        assert safe._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert safe._db.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_a_phase_written_not_durable_skips_only_its_own_flush(tmp_path: Path) -> None:
    with Store(tmp_path / "a.db") as store, Store(tmp_path / "b.db", sync=False) as fast:
        for each in (store, fast):
            each.begin_source(_source())
        statements: list[str] = []
        store._db.set_trace_callback(statements.append)
        row = store.set_phase("t1", SOURCE, TransferPhase.DONE, durable=False)
        assert row.phase is TransferPhase.DONE
        assert store.get_transfer("t1", SOURCE) == row
        pragmas = [s for s in statements if s.startswith("PRAGMA")]
        assert pragmas == ["PRAGMA synchronous=NORMAL", "PRAGMA synchronous=FULL"]
        assert statements.index("COMMIT") < statements.index("PRAGMA synchronous=FULL")
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2, "FULL again"
        statements.clear()
        store.set_phase("t1", SOURCE, TransferPhase.DONE)  # durable, as by default
        assert not [s for s in statements if s.startswith("PRAGMA")]
        fast._db.set_trace_callback(statements.append)
        fast.set_phase("t1", SOURCE, TransferPhase.DONE, durable=False)
        assert not [s for s in statements if s.startswith("PRAGMA")], "NORMAL already"


WRITER = """
import sys
from pathlib import Path
from paglets.persistence.store import Store, TransferPhase, TransferRecord, TransferRole

store = Store(Path(sys.argv[1]))
store.commit_target(
    TransferRecord("t-kill", TransferRole.TARGET, "a1", "dispatch", TransferPhase.COMMITTED, "x")
)
print("committed", flush=True)
sys.stdin.read()
"""


def test_a_committed_row_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "paglets.db"
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        try:
            assert proc.stdout.readline().strip() == "committed"
            # Killed with the connection open: the row is only in the WAL file.
            assert path.with_name("paglets.db-wal").stat().st_size > 0
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    with Store(path) as store:
        row = store.get_transfer("t-kill", TARGET)
        assert row is not None
        assert row.phase is TransferPhase.COMMITTED


# -- damage ------------------------------------------------------------------------


def test_a_file_that_is_not_a_database_is_quarantined(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "paglets.db"
    garbage = os.urandom(8192)
    path.write_bytes(garbage)
    path.with_name("paglets.db-wal").write_bytes(b"stale")
    with caplog.at_level(logging.ERROR), Store(path) as store:
        moved = store.recovered_from
        assert moved is not None
        assert moved.parent == tmp_path / QUARANTINE_DIR
        assert moved.read_bytes() == garbage
        reason = moved.with_name(moved.name + ".reason.txt").read_text()
        assert "not a database" in reason
        assert str(path) in reason
        wal = path.with_name("paglets.db-wal")
        assert not wal.exists() or b"stale" not in wal.read_bytes()
        store.begin_source(_source())
        assert store.get_transfer("t1", SOURCE) is not None
    assert any("not a usable database" in r.message for r in caplog.records)
    with Store(path) as again:
        assert again.recovered_from is None


def test_damaged_pages_fail_the_check_and_are_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "paglets.db"
    with Store(path) as store:
        for n in range(300):
            store.put_paglet(PagletRecord(f"a{n:04}", "m:C", "inactive", detail={"pad": "x" * 200}))
    size = path.stat().st_size
    with path.open("r+b") as f:  # scribble over pages past the schema page
        f.seek(size // 2)
        f.write(b"\xff" * 8192)
    with Store(path) as store:
        assert store.recovered_from is not None
        assert store.count_paglets() == 0


def test_rows_that_do_not_decode_are_quarantined_and_skipped(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    store.put_paglet(PagletRecord("a1", "m:C", "inactive"))
    store.put_paglet(PagletRecord("a2", "m:C", "inactive"))
    store.begin_source(_source("t1"))
    store.begin_source(_source("t2"))
    cursors = [store.append_event(float(n), EventKind.HOST_STARTED, "h") for n in range(5)]
    _raw(store.path, "UPDATE paglets SET detail = '{broken' WHERE agent_id = 'a2'")
    _raw(store.path, "UPDATE transfers SET phase = 'teleported' WHERE transfer_id = 't2'")
    _raw(store.path, "UPDATE events SET kind = 'no.such.kind' WHERE cursor = ?", (cursors[1],))
    _raw(store.path, "UPDATE events SET data = '[1, 2]' WHERE cursor = ?", (cursors[2],))

    with caplog.at_level(logging.WARNING):
        assert [r.agent_id for r in store.paglets()] == ["a1"]
        assert [r.transfer_id for r in store.transfers()] == ["t1"]
        events = store.events(0, limit=2)
    assert [e.cursor for e in events] == [cursors[0], cursors[3]]
    assert store.get_paglet("a2") is None
    quarantined = {(q.table, q.key): q for q in store.quarantined()}
    assert set(quarantined) == {
        ("paglets", "a2"),
        ("transfers", "t2/source"),
        ("events", str(cursors[1])),
        ("events", str(cursors[2])),
    }
    assert json.loads(quarantined["paglets", "a2"].raw)["detail"] == "{broken"
    assert "teleported" in quarantined["transfers", "t2/source"].reason
    assert sum("quarantined_rows" in r.message for r in caplog.records) == 4


def test_a_damaged_target_row_refuses_the_commit(store: Store) -> None:
    store.commit_target(_target())
    _raw(store.path, "UPDATE transfers SET detail = 'nope'")
    with pytest.raises(TransferError, match="damaged"):
        store.commit_target(_target())
    assert [q.key for q in store.quarantined()] == ["t1/target"]


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "paglets.db"
    Store(path).close()
    _raw(path, f"UPDATE schema_version SET version = {SCHEMA_VERSION + 1}")  # noqa: S608 - a constant of the test
    with pytest.raises(StorageError, match=rf"newer paglets \(schema version {SCHEMA_VERSION + 1}"):
        Store(path)
    assert path.exists()
    assert not (tmp_path / QUARANTINE_DIR).exists()


# -- files -------------------------------------------------------------------------


def test_write_atomic_writes_bytes_or_chunks_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "blob"
    write_atomic(target, b"first")
    assert target.read_bytes() == b"first"
    write_atomic(target, [b"se", memoryview(b"cond")], sync=False)
    assert target.read_bytes() == b"second"
    write_atomic(target, memoryview(b"third"))
    assert target.read_bytes() == b"third"
    assert [p.name for p in target.parent.iterdir()] == ["blob"]


def test_write_atomic_failing_midway_keeps_the_old_content(tmp_path: Path) -> None:
    target = tmp_path / "blob"
    write_atomic(target, b"old")

    def chunks() -> Iterator[bytes]:
        yield b"new-"
        raise RuntimeError("producer failed")

    with pytest.raises(RuntimeError, match="producer failed"):
        write_atomic(target, chunks())
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["blob"]


def test_quarantine_moves_with_a_reason_and_unique_names(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    moved = []
    for n in range(2):
        bad = tmp_path / "state.bin"
        bad.write_bytes(b"bad %d" % n)
        with caplog.at_level(logging.WARNING):
            moved.append(quarantine(bad, tmp_path, f"reason {n}"))
        assert not bad.exists()
    assert moved[0] != moved[1]
    assert moved[1].read_bytes() == b"bad 1"
    assert "reason 1" in moved[1].with_name(moved[1].name + ".reason.txt").read_text()
    assert sum("state.bin" in r.message for r in caplog.records) == 2


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs, to run out of space on."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_write_atomic_on_a_full_disk_keeps_the_old_content(small_fs: Path) -> None:
    target = small_fs / "blob"
    write_atomic(target, b"old")
    with pytest.raises(StorageError, match="no space left") as caught:
        write_atomic(target, [b"x" * 65536] * 32)
    assert str(target) in str(caught.value)
    assert target.read_bytes() == b"old"
    assert [p.name for p in small_fs.iterdir()] == ["blob"]


def _fill(directory: Path) -> Path:
    filler = directory / "filler"

    def write_until_full() -> None:
        with filler.open("wb", buffering=0) as f:
            while True:
                f.write(b"\0" * 4096)

    with pytest.raises(OSError) as caught:
        write_until_full()
    assert caught.value.errno == errno.ENOSPC
    return filler


def test_the_store_on_a_full_disk_fails_cleanly_and_recovers(small_fs: Path) -> None:
    with Store(small_fs / "paglets.db") as store:
        store.put_paglet(PagletRecord("a1", "m:C", "inactive"))
        filler = _fill(small_fs)
        with pytest.raises(StorageError, match="disk is full"):
            store.put_paglet(PagletRecord("a2", "m:C", "inactive", detail={"pad": "x" * 200_000}))
        assert [r.agent_id for r in store.paglets()] == ["a1"]
        filler.unlink()
        store.put_paglet(PagletRecord("a2", "m:C", "inactive"))
        assert store.count_paglets() == 2


# -- AsyncStore --------------------------------------------------------------------


async def test_async_store_runs_the_journal_from_an_event_loop(tmp_path: Path) -> None:
    async with await AsyncStore.open(tmp_path / "paglets.db", sync=False) as store:
        assert store.recovered_from is None
        await store.begin_source(_source())
        results = await asyncio.gather(*(store.commit_target(_target("t9")) for _ in range(20)))
        assert len({(r.created, r.phase) for r in results}) == 1
        assert await store.abort_target("t9", "a1") is TransferPhase.COMMITTED
        assert await store.abort_target("t8", "a1") is TransferPhase.ABORTED
        with pytest.raises(TransferError):
            await store.commit_target(_target("t8"))
        await store.set_phase("t1", SOURCE, TransferPhase.DONE)
        assert [r.transfer_id for r in await store.transfers(SOURCE, [TransferPhase.DONE])] == [
            "t1"
        ]
        await store.put_paglet(PagletRecord("a1", "m:C", "inactive"))
        assert await store.count_paglets("inactive") == 1
        cursor = await store.append_event(1.0, EventKind.HOST_STARTED, "alpha")
        assert await store.last_event_cursor() == cursor
        assert [e.cursor for e in await store.events(0, kinds=[EventKind.HOST_STARTED])] == [cursor]
    with pytest.raises(StorageError, match="closed"):
        await store.get_paglet("a1")
    await store.close()  # idempotent


async def test_async_store_runs_several_steps_in_one_trip(tmp_path: Path) -> None:
    async with await AsyncStore.open(tmp_path / "paglets.db", sync=False) as store:
        threads: list[int] = []

        def steps(sync_store: Store) -> str:
            threads.append(threading.get_ident())
            sync_store.begin_source(_source())
            sync_store.set_phase("t1", SOURCE, TransferPhase.DONE)
            return "done"

        assert await store.run(steps) == "done"
        assert threads != [threading.get_ident()], "on the store's thread"
        stored = await store.get_transfer("t1", SOURCE)
        assert stored is not None
        assert stored.phase is TransferPhase.DONE

        def fail(_store: Store) -> None:
            raise OSError(5, "Input/output error")

        with pytest.raises(OSError, match="Input/output"):
            await store.run(fail)


async def test_async_store_open_failure_leaves_no_thread(tmp_path: Path) -> None:
    path = tmp_path / "paglets.db"
    Store(path).close()
    _raw(path, "UPDATE schema_version SET version = 7")
    with pytest.raises(StorageError, match="newer"):
        await AsyncStore.open(path)


# -- the event log ---------------------------------------------------------------


async def test_event_cursors_continue_across_reopen_and_trim(tmp_path: Path) -> None:
    path = tmp_path / "paglets.db"
    async with await AsyncStore.open(path) as store:
        events = await EventLog.open("alpha", store=store)
        for n in range(5):
            events.append(EventKind.PAGLET_CREATED, f"a{n}", data={"n": n})
        await events.close()
        assert [e.data for e in await store.events(0)] == [{"n": n} for n in range(5)]
        assert await store.trim_events(keep=0) == 5
        assert await store.last_event_cursor() == 5
    async with await AsyncStore.open(path) as store:
        events = await EventLog.open("alpha", store=store)
        assert events.last_cursor == 5
        assert events.append(EventKind.HOST_STARTED).cursor == 6
        await events.flush()
        assert [(e.cursor, e.kind) for e in await store.events(0)] == [(6, EventKind.HOST_STARTED)]
        await events.close()


async def test_queries_older_than_memory_are_served_from_the_store(tmp_path: Path) -> None:
    async with await AsyncStore.open(tmp_path / "paglets.db", sync=False) as store:
        events = await EventLog.open("alpha", capacity=5, store=store)
        for n in range(20):
            events.append(EventKind.PAGLET_CREATED, f"a{n % 2}", detail=f"event {n}")
        assert [e.cursor for e in events.query(0, 100)] == [16, 17, 18, 19, 20]
        older = await events.query_async(0, 100)
        assert [e.cursor for e in older] == list(range(1, 21))
        assert [e.detail for e in older[:2]] == ["event 0", "event 1"]
        some = await events.query_async(3, 4, agent_id="a1")
        assert [e.cursor for e in some] == [4, 6, 8, 10]
        recent = await events.query_async(17, 100)
        assert [e.cursor for e in recent] == [18, 19, 20]
        await events.close()


async def test_events_before_attach_are_renumbered_and_written(tmp_path: Path) -> None:
    async with await AsyncStore.open(tmp_path / "paglets.db") as store:
        await store.append_event(1.0, EventKind.HOST_STARTED, "old")
        events = EventLog("alpha")
        events.append(EventKind.PAGLET_CREATED, "a1")
        await events.attach(store)
        assert [e.cursor for e in events.query()] == [2]
        assert events.append(EventKind.PAGLET_DISPOSED, "a1").cursor == 3
        with pytest.raises(RuntimeError, match="already writes"):
            await events.attach(store)
        await events.flush()
        assert [(e.cursor, e.host) for e in await store.events(0)] == [
            (1, "old"),
            (2, "alpha"),
            (3, "alpha"),
        ]
        await events.close()


async def test_a_store_that_refuses_events_never_breaks_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = await AsyncStore.open(tmp_path / "paglets.db")
    events = await EventLog.open("alpha", store=store)
    await store.close()
    with caplog.at_level(logging.ERROR):
        event = events.append(EventKind.HOST_STOPPING)
        await events.flush()
    assert events.dropped == 1
    assert events.query() == [event]
    assert any("could not write events 1..1" in r.message for r in caplog.records)
    await events.close()
