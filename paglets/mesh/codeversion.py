"""The code a host runs: the git commit, when paglets runs from a checkout."""

from __future__ import annotations

from pathlib import Path


def git_commit(start: Path | None = None) -> str | None:
    """The commit of the git checkout paglets runs from, if it runs from one.

    Reads ``.git`` directly (no ``git`` process): ``HEAD``, then the ref it
    names, loose or packed. Blocking: call it in a thread from async code.
    """
    root = (start or Path(__file__)).resolve()
    for directory in root.parents:
        git = directory / ".git"
        if git.is_dir():
            break
    else:
        return None
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head or None
        ref = head.removeprefix("ref: ")
        loose = git / ref
        if loose.is_file():
            return loose.read_text().strip() or None
        packed = git / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                sha, _, name = line.partition(" ")
                if name == ref:
                    return sha
    except OSError:
        return None
    return None
