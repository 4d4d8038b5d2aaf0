"""A file grabber: carries one file from the host it starts on to another host.

The smallest natural example of files that travel with a paglet
(``paglets-file-grabber``, docs/examples.md):

1. on the source host, ``check_source {"src"}`` proves the file lies in the
   host's file roots and returns its size and sha256;
2. on the destination host, a second grabber answers ``check_dest {"dest",
   "force"}``: is the path in *that* host's roots, would it overwrite? (what
   ``--dry`` shows, and the early refusal before any byte moves);
3. ``send {"src", "to", "dest", "force"}`` registers the file, remembers where it
   must land and its sha256, and dispatches the grabber to host ``to``;
4. on arrival the registered file is already in the grabber's files directory:
   it is copied next to the destination under a temporary name, its sha256
   checked, then renamed into place (atomic: a reader sees the old file or the
   whole new one), refusing to replace an existing file unless ``force``;
5. ``result`` says what happened; the caller then disposes the grabber.

Every path is checked by `in_roots` on the host that reads or writes it, so
neither a ``..`` nor a symlink leads out of the roots that host allows.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paglets import LifecycleEvent, Message, Paglet, PagletState
from paglets.core.errors import RequestError
from paglets.persistence.paths import in_roots

if TYPE_CHECKING:
    from collections.abc import Callable

CHUNK = 1 << 20
CARRIED = "grabbed"  # the name the file travels under


def sha256_of(path: Path) -> str:
    """The sha256 of the file at ``path``, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _at(folder: int, flags: int) -> Callable[[str, int], int]:
    """An ``opener`` for `open` that creates the file in the open directory ``folder``."""

    def opener(name: str, _flags: int) -> int:
        return os.open(name, flags, 0o644, dir_fd=folder)

    return opener


@dataclass
class GrabberState(PagletState):
    dest: str = ""
    force: bool = False
    sha256: str = ""
    size: int = 0
    written: str = ""  # where the file landed, once it did
    error: str = ""  # why it did not land


class FileGrabber(Paglet[GrabberState]):
    """See the module docstring."""

    State = GrabberState

    def source(self, src: str) -> Path:
        """``src`` resolved, in this host's roots, and a regular file."""
        path = in_roots(src, self.context.file_roots, owner=f"host {self.context.host_name}")
        if not path.is_file():
            raise RequestError(f"{src} is not a file on host {self.context.host_name}")
        return path

    def destination(self, dest: str, *, force: bool) -> tuple[Path, bool]:
        """``dest`` resolved and in this host's roots; whether a file is there already.

        Raises:
            RequestError: out of the roots, no such directory, a directory, or a
                file that ``force`` does not allow to replace.
        """
        host = self.context.host_name
        path = in_roots(dest, self.context.file_roots, owner=f"host {host}")
        if not path.parent.is_dir():
            raise RequestError(f"{path.parent} is not a directory on host {host}")
        if path.is_dir():
            raise RequestError(f"{path} is a directory on host {host}; give a file name")
        exists = path.exists()
        if exists and not force:
            raise RequestError(f"{path} exists on host {host}; add --force to replace it")
        return path, exists

    def on_arrival(self, event: LifecycleEvent) -> None:
        del event
        if not self.state.dest or self.state.written:
            return
        try:
            self.state.written = str(self.land(self.context.files[CARRIED]))
        except (OSError, RequestError) as exc:
            self.state.error = str(exc)

    def land(self, carried: Path) -> Path:
        """Copy ``carried`` to the destination atomically, its sha256 checked.

        The destination's directory is opened once (no symlink as its last
        name) and proven to be in the roots as opened; the copy is made and
        renamed relative to that open directory, so a directory swapped for a
        symlink meanwhile cannot send the file elsewhere.
        """
        path, _ = self.destination(self.state.dest, force=self.state.force)
        temp = f".{path.name}.{self.context.agent_id}.part"
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            opened = Path(f"/proc/self/fd/{folder}")
            if opened.exists():  # Linux: where the open directory really is
                in_roots(opened.readlink() / path.name, self.context.file_roots)
            self.copy(carried, temp, folder)
            if self.state.force:
                os.replace(temp, path.name, src_dir_fd=folder, dst_dir_fd=folder)
            else:  # a link fails if a file appeared there meanwhile: never replaced
                try:
                    os.link(temp, path.name, src_dir_fd=folder, dst_dir_fd=folder)
                except FileExistsError:
                    raise RequestError(f"{path} exists; add --force to replace it") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp, dir_fd=folder)
            os.close(folder)
        return path

    def copy(self, carried: Path, temp: str, folder: int) -> None:
        """Copy ``carried`` to a new file ``temp`` in the open directory ``folder``,
        and check its sha256 against the one taken at the source."""
        digest = hashlib.sha256()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        with carried.open("rb") as src, open(temp, "wb", opener=_at(folder, flags)) as out:
            while chunk := src.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != self.state.sha256:
            raise RequestError(
                f"sha256 of the arrived file is {digest.hexdigest()}, "
                f"not {self.state.sha256}: the source changed while it was sent"
            )

    def handle_message(self, message: Message) -> Any:
        kind, args = message.kind, message.args
        if kind == "check_source":
            path = self.source(str(args["src"]))
            return {"path": str(path), "size": path.stat().st_size, "sha256": sha256_of(path)}
        if kind == "check_dest":
            path, exists = self.destination(str(args["dest"]), force=bool(args.get("force")))
            return {"path": str(path), "exists": exists}
        if kind == "send":
            path = self.source(str(args["src"]))
            self.state.dest, self.state.force = str(args["dest"]), bool(args.get("force"))
            self.state.size, self.state.sha256 = path.stat().st_size, sha256_of(path)
            self.context.register_file(path, name=CARRIED)
            self.dispatch(str(args["to"]))
            return {"size": self.state.size, "sha256": self.state.sha256}
        if kind == "result":
            return {
                "host": self.context.host_name,
                "path": self.state.written,
                "error": self.state.error,
                "size": self.state.size,
                "sha256": self.state.sha256,
            }
        return self.not_handled()
