"""The dataclass method code cache of a daemon's start (`paglets.runtime.dataclasscode`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.skipif(
    sys.version_info[:2] != (3, 11), reason="stands in for Python 3.11's dataclasses only"
)

# A process that installs the cache at argv[1], makes its classes (one more field
# with argv[2] == "changed"), uses them, saves the cache and says what it saw.
CLASSES = """
import dataclasses, json, sys
from pathlib import Path
from paglets.runtime import dataclasscode

assert dataclasscode.install(Path(sys.argv[1]))

@dataclasses.dataclass(frozen=True, slots=True)
class Point:
    x: int
    y: int = 2
    tags: tuple[str, ...] = ()
    notes: list[str] = dataclasses.field(default_factory=list, hash=False, compare=False)
    if sys.argv[2] == "changed":
        z: int = 3

@dataclasses.dataclass(order=True)
class Job:
    name: str
    size: int = 0

p = Point(1)
try:
    p.x = 5
    frozen = False
except dataclasses.FrozenInstanceError:
    frozen = True
seen = {
    "compiled": dataclasscode.compiled(),
    "repr": repr(p),
    "equal": p == Point(1) and p != Point(1, 3),
    "hash": hash(p) == hash(Point(1, 2)),
    "frozen": frozen,
    "order": sorted([Job("b"), Job("a", 1)])[0].name,
    "saved": dataclasscode.save(force=True),
}
print(json.dumps(seen))
"""


def _make(cache: Path, variant: str = "same") -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", CLASSES, str(cache), variant],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seen: dict[str, object] = json.loads(done.stdout)
    return seen


def test_a_second_process_compiles_nothing_and_its_classes_are_the_same(tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "dataclasses.bin"
    first = _make(cache)
    assert first["compiled"] != 0, "an empty cache compiles every method"
    assert first["saved"] is True
    assert cache.stat().st_mode & 0o777 == 0o600
    assert cache.parent.stat().st_mode & 0o777 == 0o700
    second = _make(cache)
    assert second["compiled"] == 0, "every method came from the cache"
    assert second["saved"] is False, "nothing new to write"
    assert {**second, "compiled": 0, "saved": 0} == {**first, "compiled": 0, "saved": 0}
    assert first["repr"] == "Point(x=1, y=2, tags=(), notes=[])"
    assert (first["equal"], first["hash"], first["frozen"], first["order"]) == (
        True,
        True,
        True,
        "a",
    )


def test_a_changed_class_is_compiled_afresh(tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "dataclasses.bin"
    _make(cache)
    changed = _make(cache, "changed")
    assert changed["compiled"] != 0
    assert changed["repr"] == "Point(x=1, y=2, tags=(), notes=[], z=3)"
    assert _make(cache, "changed")["compiled"] == 0
    assert _make(cache)["compiled"] == 0, "the first shape is kept beside the second"


def test_a_file_others_may_write_or_a_bad_one_is_not_read(tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "dataclasses.bin"
    _make(cache)
    cache.chmod(0o666)
    assert _make(cache)["compiled"] != 0, "a file others may write is code others wrote"
    cache.chmod(0o600)
    _make(cache)
    cache.parent.chmod(0o777)
    assert _make(cache)["compiled"] != 0, "so is one in a directory others may write"
    cache.parent.chmod(0o700)
    cache.write_bytes(cache.read_bytes()[:100])
    cache.chmod(0o600)
    assert _make(cache)["compiled"] != 0, "a cut file is ignored"
    cache.write_bytes(b"not a cache at all")
    assert _make(cache)["compiled"] != 0


# A process that installs the cache with attrs' at argv[1], makes attrs classes as
# aiohttp does, uses them, saves the cache and says what it saw.
ATTRS_CLASSES = """
import json, sys
from pathlib import Path
from paglets.runtime import dataclasscode

assert dataclasscode.install(Path(sys.argv[1]), attrs=True)
import attr

@attr.s(auto_attribs=True, frozen=True, slots=True)
class Frozen:
    host: str
    port: int = 80

@attr.s(auto_attribs=True, frozen=True, cache_hash=True)
class Cached:
    name: str

f = Frozen("a")
try:
    f.port = 1
    frozen = False
except attr.exceptions.FrozenInstanceError:
    frozen = True
salt = hash("<attrs generated hash __main__.Frozen>")  # attrs' own, this process's
seen = {
    "compiled": dataclasscode.compiled(),
    "repr": repr(f),
    "equal": f == Frozen("a") and f != Frozen("a", 81),
    "salted": hash(f) == hash((salt, "a", 80)),
    "cached": hash(Cached("x")) == hash(Cached("x")),
    "frozen": frozen,
    "saved": dataclasscode.save(force=True),
}
print(json.dumps(seen))
"""


def test_attrs_classes_come_from_the_cache_with_this_processs_hash_salt(tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "dataclasses.bin"
    seen = []
    for seed in ("1", "2"):  # string hashes differ: so do attrs' salts
        done = subprocess.run(
            [sys.executable, "-c", ATTRS_CLASSES, str(cache)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert done.returncode == 0, done.stderr
        seen.append(json.loads(done.stdout))
    first, second = seen
    assert first["compiled"] != 0, "an empty cache compiles every method"
    assert second["compiled"] == 0, "every method came from the cache, salt and all"
    for one in seen:
        assert one["repr"] == "Frozen(host='a', port=80)"
        assert (one["equal"], one["salted"], one["cached"], one["frozen"]) == (True,) * 4
