"""The movement envelope: round trips, streaming, and refusing what is not one.

Malformed and malicious envelopes are built by hand, byte by byte, so the
decoder is tested against what a hostile peer could send, not only against
what `write_envelope` writes.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import hashlib
import json
import os
import pickle
import struct
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from paglets.core.errors import (
    EnvelopeError,
    InvalidStateError,
    PayloadTooLargeError,
    ProtocolError,
)
from paglets.core.state import PagletState
from paglets.wire import envelope_write
from paglets.wire.envelope import (
    MAX_HEADER,
    EnvelopeHeader,
    EnvelopeSpec,
    SourceFile,
    envelope_size,
    peek_header,
    read_header,
)
from paglets.wire.envelope_read import EnvelopeReader, check_small, read_small
from paglets.wire.envelope_receive import receive_envelope
from paglets.wire.envelope_write import write_envelope
from paglets.wire.landing import land_small
from paglets.wire.state_json import BLOB_MIN


class Mood(Enum):
    CALM = "calm"
    BUSY = "busy"


@dataclass
class Leaf:
    label: str
    when: dt.datetime


@dataclass
class Empty(PagletState):
    pass


@dataclass
class Doc(PagletState):
    name: str = ""
    count: int = 0
    payload: bytes = b""
    scratch: bytearray = field(default_factory=bytearray)
    leaves: list[Leaf] = field(default_factory=list)
    chunks: dict[str, bytes] = field(default_factory=dict)
    mood: Mood = Mood.CALM
    extra: Any = None


@dataclass
class Twin(PagletState):
    """Same fields as `Doc`, another class: an envelope of one is not the other."""

    name: str = ""


def _path_of(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _spec(state_cls: type = Doc, **changes: Any) -> EnvelopeSpec:
    spec = EnvelopeSpec(
        agent_id="a1",
        class_path="examples.counter:Counter",
        state_class_path=_path_of(state_cls),
        transfer_id="t1",
        kind="dispatch",
        hops=2,
        origin="alpha",
        origin_url="http://127.0.0.1:1",
        source="beta",
        created=1700000000.5,
        ticket={"target": "gamma"},
        meta={"from_agent": "a0"},
    )
    return dataclasses.replace(spec, **changes)


def _craft(header: Any, body: bytes = b"", *, magic: bytes = b"PGLE", version: int = 1) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack(">4sHI", magic, version, len(raw)) + raw + body


def _header(state: bytes = b"{}", **changes: Any) -> dict[str, Any]:
    """A valid header dict for a hand-made envelope holding ``state`` and no blobs."""
    data = dataclasses.asdict(_spec()) | {"state_len": len(state), "blobs": [], "files": []}
    return data | changes


def _file(name: str, content: bytes, mode: str = "copy") -> dict[str, Any]:
    sha = hashlib.sha256(content).hexdigest()
    return {"name": name, "size": len(content), "mode": mode, "sha256": sha}


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# -- round trips --------------------------------------------------------------------------


def test_empty_state_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "e.env"
    header = write_envelope(path, _spec(Empty), Empty(), sync=True)
    assert header.state_len == 2  # b"{}"
    assert header.blobs == []
    assert header.files == []
    with EnvelopeReader(path) as reader:
        assert reader.header == header
        assert reader.state(Empty) == Empty()
        assert reader.extract_files(tmp_path / "files") == []
    assert _leftovers(tmp_path) == ["e.env", "files"]


def test_nested_state_round_trip(tmp_path: Path) -> None:
    state = Doc(
        name="ünïcode ✓",
        count=7,
        payload=b"\x00\x01" * 2000,
        scratch=bytearray(b"s" * 10),
        leaves=[Leaf("x", dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC))],
        chunks={"a": b"A" * BLOB_MIN, "b": b"small"},
        mood=Mood.BUSY,
        extra={"k": [1, 2.5, None]},
    )
    path = tmp_path / "e.env"
    header = write_envelope(path, _spec(), state, sync=False)
    assert header.blobs == [4000, BLOB_MIN]  # payload, chunks["a"]; the rest inline
    assert path.stat().st_size == envelope_size(header, read_header(path.read_bytes())[1])
    with EnvelopeReader(path) as reader:
        assert reader.state(Doc) == state
        assert reader.header.ticket == {"target": "gamma"}
        assert reader.header.meta == {"from_agent": "a0"}


def test_large_bytes_travel_raw_not_base64(tmp_path: Path) -> None:
    big = os.urandom(16 << 20)
    path = tmp_path / "big.env"
    header = write_envelope(path, _spec(), Doc(payload=big), sync=False)
    assert header.blobs == [len(big)]
    size = path.stat().st_size
    assert len(big) < size < len(big) + 4096  # base64 would be 4/3 of it
    assert big[:4096] in path.read_bytes()  # raw bytes, in the file as they are
    with EnvelopeReader(path) as reader:
        assert reader.state(Doc).payload == big


def test_state_buffers_are_not_pinned_after_a_failed_write(tmp_path: Path) -> None:
    state = Doc(scratch=bytearray(b"x" * 4096))
    with pytest.raises(EnvelopeError, match="kind must be one of") as info:
        write_envelope(tmp_path / "e.env", _spec(kind="teleport"), state, sync=False)
    assert info.value  # the traceback is still alive here
    state.scratch.extend(b"more")  # BufferError if a memoryview still held it
    assert _leftovers(tmp_path) == []


def test_files_travel_with_their_digest(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(3 * (1 << 20) + 5))  # more than one copy chunk
    (src / "empty").write_bytes(b"")
    (src / "notes.txt").write_text("hello")
    files = [
        SourceFile("a.bin", src / "a.bin", "move"),
        SourceFile("empty", src / "empty"),
        SourceFile("deep/er/notes.txt", src / "notes.txt"),
    ]
    path = tmp_path / "e.env"
    header = write_envelope(path, _spec(), Doc(), files, sync=True)
    assert [(f.name, f.mode) for f in header.files] == [
        ("a.bin", "move"),
        ("empty", "copy"),
        ("deep/er/notes.txt", "copy"),
    ]
    assert header.files[0].sha256 == hashlib.sha256((src / "a.bin").read_bytes()).hexdigest()
    dest = tmp_path / "dest"
    with EnvelopeReader(path) as reader:
        placed = reader.extract_files(dest, sync=True)
    assert placed == [dest.resolve() / f.name for f in files]
    for source, target in zip(files, placed, strict=True):
        assert target.read_bytes() == source.path.read_bytes()
    assert _leftovers(dest / "deep" / "er") == ["notes.txt"]  # no temporary files


def test_a_file_that_changes_while_packed_is_refused(tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"after")
    real = envelope_write._digest

    def stale_digest(path: Path) -> dict[str, Any]:
        found = real(path)
        return found | {"sha256": hashlib.sha256(b"befor").hexdigest()}

    monkeypatch.setattr(envelope_write, "_digest", stale_digest)
    with pytest.raises(EnvelopeError, match="changed while it was being packed"):
        write_envelope(tmp_path / "e.env", _spec(), Doc(), [SourceFile("f", src)], sync=False)
    assert _leftovers(tmp_path) == ["f"]


def test_started_sees_the_header_and_the_size_before_the_bulk_is_written(
    tmp_path: Path,
) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"carried along")
    big = os.urandom(BLOB_MIN * 4)
    seen: list[tuple[Path, int, int, EnvelopeHeader, int]] = []

    def started(tmp: Path, size: int) -> None:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            header, start = peek_header(fd)
            seen.append((tmp, size, os.fstat(fd).st_size, header, start))
        finally:
            os.close(fd)

    path = tmp_path / "e.env"
    written = write_envelope(
        path, _spec(), Doc(payload=big), [SourceFile("f", src)], sync=False, started=started
    )
    [(tmp, size, there, header, start)] = seen
    assert tmp.parent == tmp_path
    assert tmp.name.startswith(".e.env.")
    assert not tmp.exists()  # renamed to `path` since
    assert header == written
    assert size == envelope_size(header, start) == path.stat().st_size
    assert there == start + header.state_len  # the header and the JSON, not the bulk


def test_a_failure_in_started_stops_the_write_and_leaves_nothing(tmp_path: Path) -> None:
    def started(_tmp: Path, _size: int) -> None:
        raise OSError("no host to send it to")

    state = Doc(payload=os.urandom(BLOB_MIN))
    with pytest.raises(OSError, match="no host"):
        write_envelope(tmp_path / "e.env", _spec(), state, sync=False, started=started)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("cut", [0, 5, 10, 20])
def test_peek_header_says_what_is_missing(tmp_path: Path, cut: int) -> None:
    whole = tmp_path / "e.env"
    write_envelope(whole, _spec(), Doc(), sync=False)
    torn = tmp_path / "torn"
    torn.write_bytes(whole.read_bytes()[:cut])
    fd = os.open(torn, os.O_RDONLY)
    try:
        with pytest.raises(EnvelopeError, match="truncated"):
            peek_header(fd)
    finally:
        os.close(fd)


def test_write_refuses_a_state_of_another_class(tmp_path: Path) -> None:
    with pytest.raises(EnvelopeError, match=r"names state class .*Doc.*but the state is a .*Twin"):
        write_envelope(tmp_path / "e.env", _spec(Doc), Twin(), sync=False)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../../b", "", "a//b", "./a", "a\\b"])
def test_write_refuses_bad_file_names(tmp_path: Path, name: str) -> None:
    src = tmp_path / "f"
    src.write_text("x")
    with pytest.raises(EnvelopeError, match=r"file entry\.name must be a relative POSIX path"):
        write_envelope(tmp_path / "e.env", _spec(), Doc(), [SourceFile(name, src)], sync=False)
    assert _leftovers(tmp_path) == ["f"]


def test_envelope_error_is_a_protocol_error() -> None:
    assert issubclass(EnvelopeError, ProtocolError)
    assert EnvelopeError.http_status == 400


# -- refusing what is not a whole envelope ---------------------------------------------------


def _write_raw(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "raw.env"
    path.write_bytes(data)
    return path


def _valid_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "valid.env"
    write_envelope(path, _spec(), Doc(name="n", payload=b"p" * 2000), sync=False)
    data = path.read_bytes()
    path.unlink()
    return data


@pytest.mark.parametrize("cut", [0, 1, 9, 10, 30, -1])
def test_truncated_file(tmp_path: Path, cut: int) -> None:
    data = _valid_bytes(tmp_path)
    path = _write_raw(tmp_path, data[:cut])
    with pytest.raises(EnvelopeError, match=r"truncated: \d+ of (at least )?\d+ bytes"):
        EnvelopeReader(path)


def test_truncated_file_says_how_much_is_missing(tmp_path: Path) -> None:
    data = _valid_bytes(tmp_path)
    path = _write_raw(tmp_path, data[:-1])
    with pytest.raises(EnvelopeError, match=rf"truncated: {len(data) - 1} of {len(data)} bytes"):
        EnvelopeReader(path)


def test_trailing_bytes(tmp_path: Path) -> None:
    path = _write_raw(tmp_path, _valid_bytes(tmp_path) + b"\x00")
    with pytest.raises(EnvelopeError, match="trailing bytes: 1 after"):
        EnvelopeReader(path)


def test_read_small_gives_the_whole_of_a_small_envelope(tmp_path: Path) -> None:
    data = _valid_bytes(tmp_path)
    path = _write_raw(tmp_path, data)
    header, body = read_small(path, len(data))
    assert body == data
    assert header == read_header(data)[0]
    assert header.agent_id == _spec().agent_id


def test_read_small_gives_only_the_header_of_a_larger_one(tmp_path: Path) -> None:
    data = _valid_bytes(tmp_path)
    header, body = read_small(_write_raw(tmp_path, data), len(data) - 1)
    assert body is None
    assert header == read_header(data)[0]


@pytest.mark.parametrize("damage", ["truncated", "trailing"])
def test_read_small_checks_the_length(tmp_path: Path, damage: str) -> None:
    data = _valid_bytes(tmp_path)
    raw = data[:-1] if damage == "truncated" else data + b"\x00"
    path = _write_raw(tmp_path, raw)
    with pytest.raises(EnvelopeError, match=rf"{path}: {damage}"):
        read_small(path, 1 << 20)


def test_check_small_takes_exactly_one_whole_envelope(tmp_path: Path) -> None:
    data = _valid_bytes(tmp_path)
    assert check_small(data) == read_header(data)[0]
    with pytest.raises(EnvelopeError, match="truncated"):
        check_small(data[:-1])
    with pytest.raises(EnvelopeError, match="trailing bytes: 1 after"):
        check_small(data + b"\x00")
    with pytest.raises(EnvelopeError, match="not a paglets envelope"):
        check_small(b"PK\x03\x04" + data[4:])


def test_bad_magic(tmp_path: Path) -> None:
    path = _write_raw(tmp_path, _craft(_header(), b"{}", magic=b"PK\x03\x04"))
    with pytest.raises(EnvelopeError, match="not a paglets envelope"):
        EnvelopeReader(path)


def test_future_version_names_the_versions_read_here(tmp_path: Path) -> None:
    path = _write_raw(tmp_path, _craft(_header(), b"{}", version=2))
    with pytest.raises(
        EnvelopeError, match="version 2 is not supported: this host reads version 1"
    ):
        EnvelopeReader(path)


def test_oversize_header_is_refused_from_the_prefix_alone() -> None:
    prefix = struct.pack(">4sHI", b"PGLE", 1, MAX_HEADER + 1)
    with pytest.raises(EnvelopeError, match=f"header of {MAX_HEADER + 1} bytes is over"):
        read_header(prefix)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"\xff\xfe", "not UTF-8 JSON"),
        (b"{not json", "not UTF-8 JSON"),
        (b"[]", "envelope header must be a JSON object, not list"),
        (b"[" * 100_000, "not UTF-8 JSON"),
    ],
)
def test_header_that_is_not_a_json_object(tmp_path: Path, raw: bytes, expected: str) -> None:
    path = _write_raw(tmp_path, _craft(raw))
    with pytest.raises(EnvelopeError, match=expected):
        EnvelopeReader(path)


BAD_HEADERS = [
    ({"surprise": 1}, r"unknown fields in envelope header: \['surprise'\]"),
    ({"agent_id": None}, r"envelope header\.agent_id must be a string of 1-200"),
    ({"agent_id": ""}, r"envelope header\.agent_id must be a string"),
    ({"transfer_id": "t" * 201}, r"envelope header\.transfer_id must be a string"),
    ({"class_path": 3}, r"envelope header\.class_path must be"),
    ({"kind": "teleport"}, r"envelope header\.kind must be one of"),
    ({"hops": "1"}, r"envelope header\.hops must be a non-negative integer"),
    ({"hops": -1}, r"envelope header\.hops must be a non-negative integer"),
    ({"hops": True}, r"envelope header\.hops must be a non-negative integer"),
    ({"created": "now"}, r"envelope header\.created must be a finite number"),
    ({"created": float("inf")}, r"envelope header\.created must be a finite number"),
    ({"state_len": -2}, r"envelope header\.state_len must be a non-negative integer"),
    ({"state_len": True}, r"envelope header\.state_len must be a non-negative integer"),
    ({"state_len": 2.0}, r"envelope header\.state_len must be a non-negative integer"),
    ({"blobs": [-1]}, r"envelope header\.blobs must be a list of sizes"),
    ({"blobs": [False]}, r"envelope header\.blobs must be a list of sizes"),
    ({"blobs": 5}, r"envelope header\.blobs must be a list of sizes"),
    ({"files": {}}, r"envelope header\.files must be a list"),
    ({"ticket": []}, r"envelope header\.ticket must be an object"),
    ({"files": ["a"]}, r"file entry must be a JSON object"),
    ({"files": [_file("a", b"") | {"x": 1}]}, r"unknown fields in file entry: \['x'\]"),
    ({"files": [{"name": "a", "size": 0, "mode": "copy"}]}, r"file entry lacks fields"),
    ({"files": [_file("a", b"") | {"size": -1}]}, r"file entry\.size must be a non-negative"),
    ({"files": [_file("a", b"") | {"size": True}]}, r"file entry\.size must be a non-negative"),
    ({"files": [_file("a", b"") | {"mode": "link"}]}, r"file entry\.mode must be one of"),
    ({"files": [_file("a", b"") | {"sha256": "A" * 64}]}, r"file entry\.sha256 must be"),
    ({"files": [_file("a", b""), _file("a", b"")]}, r"file names collide"),
    ({"files": [_file("a", b""), _file("a/b", b"")]}, r"file names collide"),
]


@pytest.mark.parametrize(("changes", "expected"), BAD_HEADERS)
def test_bad_header_fields(tmp_path: Path, changes: dict[str, Any], expected: str) -> None:
    path = _write_raw(tmp_path, _craft(_header(**changes), b"{}"))
    with pytest.raises(EnvelopeError, match=expected):
        EnvelopeReader(path)


def test_missing_header_field(tmp_path: Path) -> None:
    header = _header()
    del header["source"]
    path = _write_raw(tmp_path, _craft(header, b"{}"))
    with pytest.raises(EnvelopeError, match=r"envelope header lacks fields: \['source'\]"):
        EnvelopeReader(path)


@pytest.mark.parametrize(
    "name", ["../x", "/etc/passwd", "a/../../b", "", "a/./b", "a/", "x\x00y", "..", "a\\..\\b"]
)
def test_file_names_leading_anywhere_else_are_refused(tmp_path: Path, name: str) -> None:
    header = _header(files=[_file(name, b"boom")])
    path = _write_raw(tmp_path, _craft(header, b"{}boom"))
    with pytest.raises(EnvelopeError, match=r"file entry\.name must be a relative POSIX path"):
        EnvelopeReader(path)


def test_a_corrupted_file_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    header = _header(files=[_file("good", b"good"), _file("bad", b"original")])
    path = _write_raw(tmp_path, _craft(header, b"{}goodtampered"))
    dest = tmp_path / "dest"
    with EnvelopeReader(path) as reader, pytest.raises(EnvelopeError, match="'bad' fails its SHA"):
        reader.extract_files(dest)
    assert not dest.exists()


def test_extract_does_not_follow_symlinks_out_of_the_destination(tmp_path: Path) -> None:
    outside, dest = tmp_path / "outside", tmp_path / "dest"
    outside.mkdir()
    dest.mkdir()
    (outside / "victim").write_text("keep")
    (dest / "link").symlink_to(outside, target_is_directory=True)
    (dest / "file").symlink_to(outside / "victim")
    header = _header(files=[_file("link/victim", b"evil")])
    path = _write_raw(tmp_path, _craft(header, b"{}evil"))
    with EnvelopeReader(path) as reader, pytest.raises(EnvelopeError, match="written outside"):
        reader.extract_files(dest)
    header = _header(files=[_file("file", b"new")])
    with (
        EnvelopeReader(_write_raw(tmp_path, _craft(header, b"{}new"))) as reader,
        pytest.raises(EnvelopeError, match="written outside"),
    ):
        reader.extract_files(dest)  # a link out at the file's own name: refused too
    assert (outside / "victim").read_text() == "keep"


# -- malicious payloads: nothing runs ---------------------------------------------------------


class _Touch:
    """Unpickling this creates ``marker``: proof, if it ever exists, that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_the_pickle_payload_is_live(tmp_path: Path) -> None:
    # Without this, the tests below could pass with a payload that does nothing.
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Touch(marker)))  # noqa: S301 - on purpose
    assert marker.exists()


def _state_envelope(
    tmp_path: Path, state: bytes, *, blobs: tuple[bytes, ...] = (), **changes: Any
) -> Path:
    header = _header(state, blobs=[len(b) for b in blobs], **changes)
    return _write_raw(tmp_path, _craft(header, state + b"".join(blobs)))


@pytest.mark.parametrize("global_name", ["os:system", "builtins:eval", "pickle:loads"])
def test_a_state_class_path_naming_a_global_is_refused(tmp_path: Path, global_name: str) -> None:
    marker = tmp_path / "ran"
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    state = json.dumps({"name": code}).encode()
    path = _state_envelope(tmp_path, state, state_class_path=global_name)
    with EnvelopeReader(path) as reader:
        with pytest.raises(EnvelopeError, match=f"holds state of class '{global_name}', not"):
            reader.state(Doc)
        with pytest.raises(EnvelopeError, match=r"holds state of class .*, not .*Twin"):
            reader.state(Twin)
    assert not marker.exists()


def test_pickle_bytes_as_the_state_are_not_json(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = _state_envelope(tmp_path, pickle.dumps(_Touch(marker)))
    with EnvelopeReader(path) as reader, pytest.raises(EnvelopeError, match="not UTF-8 JSON"):
        reader.state(Doc)
    assert not marker.exists()


def test_pickle_bytes_in_a_bytes_field_stay_bytes(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    payload = pickle.dumps(_Touch(marker))
    inline = {"$bytes": base64.b64encode(payload).decode()}
    state = json.dumps({"payload": {"$blob": 0}, "chunks": {"p": inline}}).encode()
    path = _state_envelope(tmp_path, state, blobs=(payload,))
    with EnvelopeReader(path) as reader:
        decoded = reader.state(Doc)
    assert decoded.payload == payload
    assert decoded.chunks == {"p": payload}
    assert not marker.exists()


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ({"name": {"__reduce__": ["os:system", ["touch ran"]]}}, r"state\.name: expected str"),
        ({"__reduce__": ["os:system", ["touch ran"]]}, r"unknown field '__reduce__'"),
        ({"name": {"$blob": 0}}, r"state\.name: expected str, got object"),
        ({"leaves": [{"$type": "os:system"}]}, r"state\.leaves\[0\]: unknown field '\$type'"),
        ({"mood": "os:system"}, r"state\.mood: expected Mood"),
        ({"payload": {"$blob": 1}}, r"state\.payload: \$blob must be an integer index below 1"),
        ({"payload": {"$blob": True}}, r"state\.payload: \$blob must be .* got boolean"),
        ({"count": {"$blob": 0}}, r"state\.count: expected int"),
    ],
)
def test_forged_state_is_invalid_state(
    tmp_path: Path, state: dict[str, Any], expected: str
) -> None:
    marker = tmp_path / "ran"
    blob = pickle.dumps(_Touch(marker))
    path = _state_envelope(tmp_path, json.dumps(state).encode(), blobs=(blob,))
    reader = EnvelopeReader(path)
    with pytest.raises(InvalidStateError, match=expected) as info:
        reader.state(Doc)
    assert info.traceback  # alive while the reader closes: no view may pin the mapping
    reader.close()
    reader.close()
    assert not marker.exists()


def test_state_that_is_not_an_object(tmp_path: Path) -> None:
    path = _state_envelope(tmp_path, b"[1, 2]")
    with EnvelopeReader(path) as reader, pytest.raises(EnvelopeError, match="must be a JSON obj"):
        reader.state(Doc)


# -- receiving a stream -----------------------------------------------------------------------


class Stream:
    """An async ``read(n)`` over bytes, ``step`` bytes at most per call, like aiohttp's."""

    def __init__(self, data: bytes, step: int = 65536) -> None:
        self.data, self.step, self.pos = data, step, 0

    async def read(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + min(n, self.step)]
        self.pos += len(chunk)
        return chunk


def _accept(_header: EnvelopeHeader) -> None:
    pass


async def test_receive_fast_path(tmp_path: Path) -> None:
    data = _valid_bytes(tmp_path)
    big = tmp_path / "big.env"
    write_envelope(big, _spec(), Doc(payload=os.urandom(5 << 20)), sync=False)
    for source in (data, big.read_bytes()):
        dest = tmp_path / "in" / "got.env"
        dest.parent.mkdir(exist_ok=True)
        seen: list[EnvelopeHeader] = []
        header = await receive_envelope(Stream(source).read, dest, check=seen.append, sync=True)
        assert seen == [header]
        assert dest.read_bytes() == source
        assert _leftovers(dest.parent) == ["got.env"]
        dest.unlink()


async def test_receive_hands_a_small_envelope_whole_to_the_land_hook(tmp_path: Path) -> None:
    data = _valid_bytes(tmp_path)
    big = tmp_path / "big.env"
    write_envelope(big, _spec(), Doc(payload=os.urandom(5 << 20)), sync=False)
    landed: list[tuple[EnvelopeHeader, bytes]] = []

    async def land(header: EnvelopeHeader, chunks: list[bytes]) -> None:
        landed.append((header, b"".join(chunks)))
        land_small(tmp_path / "small.env", chunks, sync=False)

    header = await receive_envelope(
        Stream(data).read, tmp_path / "unused.env", check=_accept, sync=False, land=land
    )
    assert landed == [(header, data)]
    assert (tmp_path / "small.env").read_bytes() == data
    assert not (tmp_path / "unused.env").exists(), "the hook lands it, not the receiver"
    dest = tmp_path / "big-got.env"
    await receive_envelope(
        Stream(big.read_bytes()).read, dest, check=_accept, sync=False, land=land
    )
    assert len(landed) == 1, "a large one is streamed to its file, not handed whole"
    assert dest.read_bytes() == big.read_bytes()


async def test_receive_one_byte_at_a_time(tmp_path: Path) -> None:
    data = _valid_bytes(tmp_path)
    progress: list[int] = []
    dest = tmp_path / "got.env"
    header = await receive_envelope(
        Stream(data, step=1).read,
        dest,
        check=_accept,
        sync=False,
        chunk_size=1000,
        small_max=0,
        progress=lambda: progress.append(1),
    )
    assert dest.read_bytes() == data
    assert header.blobs == [2000]
    assert len(progress) == 3  # the body in batches of at most 1000 bytes
    with EnvelopeReader(dest) as reader:
        assert reader.state(Doc).payload == b"p" * 2000


async def test_check_refuses_before_the_body_is_read(tmp_path: Path) -> None:
    data = _valid_bytes(tmp_path)
    stream = Stream(data, step=7)

    def refuse(header: EnvelopeHeader) -> None:
        raise PermissionError(f"not taking {header.agent_id}")

    with pytest.raises(PermissionError, match="not taking a1"):
        await receive_envelope(stream.read, tmp_path / "got.env", check=refuse, sync=False)
    assert stream.pos == read_header(data)[1]  # prefix and header only
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("cut", [3, 10, 40, -1])
async def test_truncated_stream_leaves_nothing(tmp_path: Path, cut: int) -> None:
    data = _valid_bytes(tmp_path)
    with pytest.raises(EnvelopeError, match=r"truncated: \d+ of (at least )?\d+ bytes"):
        await receive_envelope(
            Stream(data[:cut], step=100).read, tmp_path / "got.env", check=_accept, sync=False
        )
    assert _leftovers(tmp_path) == []


async def test_stream_with_trailing_bytes_leaves_nothing(tmp_path: Path) -> None:
    data = _valid_bytes(tmp_path) + b"x"
    with pytest.raises(EnvelopeError, match="trailing bytes"):
        await receive_envelope(Stream(data).read, tmp_path / "got.env", check=_accept, sync=False)
    assert _leftovers(tmp_path) == []


async def test_stream_over_the_limit_is_refused_before_the_body(tmp_path: Path) -> None:
    data = _valid_bytes(tmp_path)
    stream = Stream(data)
    with pytest.raises(PayloadTooLargeError, match=f"is {len(data)} bytes, over the 100 limit"):
        await receive_envelope(
            stream.read, tmp_path / "got.env", check=_accept, sync=False, max_total=100
        )
    assert stream.pos < len(data)
    assert _leftovers(tmp_path) == []


async def test_stream_with_an_oversize_header_stops_at_the_prefix(tmp_path: Path) -> None:
    stream = Stream(struct.pack(">4sHI", b"PGLE", 1, MAX_HEADER + 1) + b"{" * 100)
    with pytest.raises(EnvelopeError, match="over the"):
        await receive_envelope(stream.read, tmp_path / "got.env", check=_accept, sync=False)
    assert stream.pos == 10


async def test_a_forged_stream_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    header = _header(files=[_file("../../etc/cron.d/x", b"evil")])
    stream = Stream(_craft(header, b"{}evil"))
    with pytest.raises(EnvelopeError, match="relative POSIX path"):
        await receive_envelope(stream.read, tmp_path / "got.env", check=_accept, sync=False)
    assert _leftovers(tmp_path) == []


async def test_a_reader_returning_too_much_is_an_error(tmp_path: Path) -> None:
    data = _valid_bytes(tmp_path)

    async def greedy(n: int) -> bytes:
        return data

    with pytest.raises(ValueError, match=r"read\(10\) returned"):
        await receive_envelope(greedy, tmp_path / "got.env", check=_accept, sync=False)


async def test_cancelled_mid_stream_leaves_nothing(tmp_path: Path) -> None:
    data = _valid_bytes(tmp_path)
    stalled, never = asyncio.Event(), asyncio.Event()
    stream = Stream(data[:-100])

    async def read(n: int) -> bytes:
        chunk = await stream.read(n)
        if not chunk:
            stalled.set()
            await never.wait()
        return chunk

    task = asyncio.ensure_future(
        receive_envelope(
            read, tmp_path / "got.env", check=_accept, sync=False, chunk_size=512, small_max=0
        )
    )
    await asyncio.wait_for(stalled.wait(), 10)
    assert any(name.endswith(".tmp") for name in _leftovers(tmp_path))  # it was spooling
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _leftovers(tmp_path) == []
