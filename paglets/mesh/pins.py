"""``PinStore``: host name → public key, pinned on first sight, like SSH's ``known_hosts``.

The pins live in ``<home>/mesh/known_hosts`` (mode 0600), one line per host::

    # comments and blank lines are kept
    beta ed25519 mC0h9...base64...=

A new pin is appended, so the operator's comments and order stay. To let a
host that was legitimately reinstalled (new identity) back under its name,
delete its line: the host reads the file again when it changes on disk, and
pins the next fresh record of that name it sees. Lines it cannot parse are
logged and ignored.

Reading and writing the file is blocking: the async `flush` and `refresh`
run it in a thread; `get` and `pin` only touch memory.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
from typing import TYPE_CHECKING, Final

from paglets.core.ids import IdKind, is_valid_id
from paglets.wire.mesh import PUBLIC_KEY_BYTES

if TYPE_CHECKING:
    from pathlib import Path

log = logging.getLogger(__name__)

PINS_FILE: Final = "known_hosts"
MAX_PINS: Final = 10_000
_ALGORITHM: Final = "ed25519"


def _is_key(value: str) -> bool:
    try:
        return len(base64.b64decode(value, validate=True)) == PUBLIC_KEY_BYTES
    except (binascii.Error, ValueError):
        return False


def parse_pins(text: str, source: str = "known_hosts") -> dict[str, str]:
    """The pins in ``text``; a bad line is logged and skipped, a later line of a name wins."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        ok = len(parts) == 3 and is_valid_id(parts[0], IdKind.HOST)  # noqa: PLR2004
        if not ok or parts[1] != _ALGORITHM or not _is_key(parts[2]):
            log.warning("%s:%d: not 'NAME ed25519 KEY'; ignored: %.80r", source, number, raw)
            continue
        pins[parts[0]] = parts[2]
    return pins


class PinStore:
    """See the module docstring.

    Args:
        path: the pins file.
        limit: how many names it may hold; past it, new names are refused.
    """

    def __init__(self, path: Path, limit: int = MAX_PINS) -> None:
        self.path = path
        self.limit = limit
        self._pins: dict[str, str] = {}
        self._unsaved: dict[str, str] = {}
        self._stamp: tuple[int, int] | None = None  # (mtime_ns, size) as we last left it
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<PinStore {self.path} pins={len(self._pins)} unsaved={len(self._unsaved)}>"

    def __len__(self) -> int:
        return len(self._pins)

    def get(self, name: str) -> str | None:
        """The public key pinned for ``name``, or ``None``."""
        return self._pins.get(name)

    def pin(self, name: str, public_key: str) -> bool:
        """Pin ``name`` to ``public_key`` in memory (`flush` writes it); ``False`` when full."""
        if name in self._pins:
            return self._pins[name] == public_key
        if len(self._pins) >= self.limit:
            return False
        self._pins[name] = self._unsaved[name] = public_key
        return True

    @property
    def dirty(self) -> bool:
        """Whether pins wait to be written."""
        return bool(self._unsaved)

    def load(self) -> None:
        """Read the file (blocking); a missing file is an empty store."""
        self._pins = self._read() | self._unsaved

    def _read(self) -> dict[str, str]:
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
            self._stamp = _stamp(self.path)
        except FileNotFoundError:
            self._stamp = None
            return {}
        return parse_pins(text, str(self.path))

    async def flush(self) -> None:
        """Append the new pins to the file."""
        async with self._lock:
            if not self._unsaved:
                return
            lines = "".join(f"{n} {_ALGORITHM} {k}\n" for n, k in self._unsaved.items())
            unsaved, self._unsaved = self._unsaved, {}
            try:
                await asyncio.to_thread(self._append, lines)
            except OSError as exc:
                log.warning("cannot write %s: %s; will retry", self.path, exc)
                self._unsaved = unsaved | self._unsaved

    def _append(self, lines: str) -> None:
        changed = self._stamp != _stamp(self.path)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, lines.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        if not changed:  # an edit made since we last looked is still seen by refresh()
            self._stamp = _stamp(self.path)

    async def refresh(self) -> bool:
        """Read the file again if someone else changed it; whether it changed."""
        async with self._lock:
            if await asyncio.to_thread(_stamp, self.path) == self._stamp:
                return False
            pins = await asyncio.to_thread(self._read)
            dropped = sorted(self._pins.keys() - pins.keys() - self._unsaved.keys())
            self._pins = pins | self._unsaved
            if dropped:
                log.info("pins dropped from %s: %s", self.path, ", ".join(dropped))
            return True


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size
