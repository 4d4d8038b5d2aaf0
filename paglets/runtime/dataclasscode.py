"""The code of dataclass methods, compiled once and kept, for a daemon's start.

On Python 3.11 and 3.12, ``@dataclass`` writes the source of each method it
adds (``__init__``, ``__repr__``, ``__eq__``, ``__hash__``, and for a frozen one
``__setattr__`` and ``__delattr__``) and compiles it, one ``exec`` a method. A
``paglets-host`` makes about a hundred dataclasses as it imports, and those
compiles were half of its imports beyond aiohttp's: 18 % of the instructions
of a start to ready (callgrind), the most of any one thing.

`install` puts a cache in front of that compile: the compiled code of each
method source, keyed by the whole source text, read from one file at start.
The same text compiles to the same code, so a hit is what a compile would have
made; a changed class writes another text and is compiled as before. `save`
writes back the entries this process used with those it read (only those it
used once there are more than `MAX_ENTRIES`: stale ones are dropped).
`install` stands in only for Python 3.11's ``dataclasses._create_fn``, whose
text it builds the same way, and does nothing on any other version (3.13
compiles a class's methods in one go and has no such function).

With ``attrs=True`` it also stands in for the compile of the methods `attrs`
writes for its classes (``attr._make._compile_and_eval``, one compile a method
too): aiohttp makes about thirty such classes as it is imported, 8 to 30 ms of
a host's start on this kind of machine. Their entries are keyed by the file
name attrs gives the code and its text, compiled with the future flags of
attrs' module as there; an attrs whose function differs is left as it is. The
one thing in that text that changes from process to process is the salt of a
``__hash__`` (a string's hash, randomized per process): it is keyed as a fixed
stand-in, and the cached code gets this process's salt back in place of it
(the same code as a compile would make, but for the columns of that number).

The file holds code, as a ``.pyc`` does: it is read only if it is this user's,
in a directory of this user's, and written by nobody else (mode 0600 in a 0700
directory); anything else about it (another Python's, unreadable, too large)
and it is ignored. ``./run`` fills it (``python -m paglets.runtime.dataclasscode``);
a host fills it once it is ready, unless told not to write bytecode
(``PYTHONDONTWRITEBYTECODE``).
"""

from __future__ import annotations
import __future__

import contextlib
import dataclasses
import importlib
import importlib.util
import inspect
import logging
import marshal
import os
import re
import stat
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

MAX_FILE: Final = 16 << 20
"""The largest cache file read, bytes (a host's is about half a MiB)."""

MAX_ENTRIES: Final = 4096
"""Method sources kept (a host uses about 500); past it, only those a process used."""

DAEMON_MODULES: Final = (
    "paglets.cli.host",
    "paglets.host",
    "paglets.runtime.warmup",
    "paglets.runtime.child",
)
"""What ``paglets-host`` and its zygote import before they serve: what ``./run`` fills
the cache with."""

_HEADER: Final = b"paglets-dataclass-code\n" + importlib.util.MAGIC_NUMBER

_ATTRS_PARAMETERS: Final = ("script", "globs", "locs", "filename")
"""``attr._make._compile_and_eval``'s, as `install` stands in for it (attrs 22 to 26)."""

_ATTRS_SALT: Final = re.compile(r"hash\(\(\n[ ]+(-?[0-9]+),\n")
"""Where an attrs ``__hash__`` has its per-process salt (``attr._make._make_hash_script``)."""

_SALT_STAND_IN: Final = 0x5A175A175A175A17
"""The salt an attrs ``__hash__`` is keyed and cached with."""


class _Cache:
    """The loaded entries, the ones used since, and the compile they stand in for."""

    def __init__(self, path: Path, entries: dict[str, Any], original: Any) -> None:
        self.path = path
        self.entries = entries
        self.used: dict[str, Any] = {}
        self.compiled = 0
        self.original = original
        self.attrs_original: Any = None  # attrs' compile, once stood in for

    def code(self, text: str, make: Callable[[], Any] | None = None) -> Any:
        """The code for ``text``: from the cache, else ``make()`` (a compile of it)."""
        found = self.used.get(text) or self.entries.get(text)
        if found is None:
            found = make() if make else compile(text, "<string>", "exec", dont_inherit=True)
            self.compiled += 1
        self.used[text] = found
        return found


_cache: _Cache | None = None


def default_path() -> Path:
    """This user's cache file for this Python (its cache tag in the name)."""
    import platformdirs  # noqa: PLC0415 - a daemon's start imports it anyway (launch files)

    tag = sys.implementation.cache_tag or "python"
    return Path(platformdirs.user_cache_dir("paglets")) / f"dataclasses.{tag}.bin"


def install(path: Path | None = None, *, attrs: bool = False) -> bool:
    """Serve dataclass method code from the cache at ``path`` from now on; whether it does.

    With ``attrs``, the code of `attrs` classes' methods too (it imports attrs,
    which aiohttp imports anyway). Idempotent. Does nothing on another Python
    than 3.11 (see the module docstring).
    """
    global _cache  # noqa: PLW0603 - one per process, as the dataclasses module
    original = getattr(dataclasses, "_create_fn", None)
    if (
        _cache is None
        and getattr(original, "__module__", None) == "dataclasses"  # not absent, not another's
        and sys.version_info[:2] == (3, 11)
    ):
        path = path or default_path()
        _cache = _Cache(path, _read(path), original)
        dataclasses._create_fn = _create_fn  # type: ignore[attr-defined]  # noqa: SLF001
    if attrs and _cache is not None and _cache.attrs_original is None:
        _install_attrs(_cache)
    return _cache is not None


def _install_attrs(cache: _Cache) -> None:
    """Stand in for attrs' compile of its classes' methods, if it is the one we know."""
    try:
        from attr import _make  # noqa: PLC0415 - only a daemon that imports aiohttp
    except ImportError:
        return
    original = getattr(_make, "_compile_and_eval", None)
    try:
        parameters = tuple(inspect.signature(original).parameters)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return
    if getattr(original, "__module__", None) != _make.__name__ or parameters != _ATTRS_PARAMETERS:
        return
    # compiled as attrs' own compile() does: with the future features of its module
    flags = 0
    for value in vars(_make).values():
        if isinstance(value, __future__._Feature):  # noqa: SLF001 - what compile() inherits
            flags |= value.compiler_flag

    def compile_and_eval(
        script: str,
        globs: dict[str, Any] | None,
        locs: Any = None,
        filename: str = "",
    ) -> None:
        salts = set(_ATTRS_SALT.findall(script))
        salt = int(salts.pop()) if len(salts) == 1 else None
        text = script
        if salt is not None:
            text = script.replace(f" {salt},\n", f" {_SALT_STAND_IN},\n")

        def make() -> Any:
            return compile(text, filename, "exec", flags=flags, dont_inherit=True)

        code = cache.code(f"attrs {filename}\n{text}", make)
        if salt is not None:
            code = _with_constant(code, _SALT_STAND_IN, salt)
        eval(code, globs, locs)  # noqa: S307 - attrs' own code, as it runs it

    cache.attrs_original = original
    _make._compile_and_eval = compile_and_eval  # noqa: SLF001


def _with_constant(code: types.CodeType, old: int, new: int) -> types.CodeType:
    """``code`` with the integer constant ``old`` made ``new``, in it and the code it holds."""
    consts = tuple(
        _with_constant(c, old, new)
        if isinstance(c, types.CodeType)
        else (new if type(c) is int and c == old else c)
        for c in code.co_consts
    )
    return code.replace(co_consts=consts)


def uninstall() -> None:
    """Make dataclass methods as the standard library does again, and drop the cache.

    For a process that forks others (the zygote): what they make is their own.
    """
    global _cache  # noqa: PLW0603 - see install
    if _cache is not None:
        dataclasses._create_fn = _cache.original  # type: ignore[attr-defined]  # noqa: SLF001
        if _cache.attrs_original is not None:
            from attr import _make  # noqa: PLC0415 - imported by install

            _make._compile_and_eval = _cache.attrs_original  # noqa: SLF001
        _cache = None


def compiled() -> int:
    """How many method sources this process compiled (missed the cache), attrs' too."""
    return 0 if _cache is None else _cache.compiled


def save(*, force: bool = False) -> bool:
    """Write the entries this process used, if any was compiled; whether it wrote.

    Not under ``PYTHONDONTWRITEBYTECODE`` (``sys.dont_write_bytecode``) unless
    ``force``. Never raises: a cache that cannot be written is only slower.
    """
    cache = _cache
    if cache is None or not cache.compiled or (sys.dont_write_bytecode and not force):
        return False
    try:
        keep = {**cache.entries, **cache.used}
        if len(keep) > MAX_ENTRIES:
            keep = cache.used
        data = _HEADER + marshal.dumps(keep)
        cache.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temp = cache.path.with_name(f".{cache.path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            temp.replace(cache.path)
        finally:
            temp.unlink(missing_ok=True)
    except (OSError, ValueError) as exc:
        log.debug("could not write the dataclass code cache %s: %s", cache.path, exc)
        return False
    cache.entries, cache.compiled = keep, 0
    return True


def _read(path: Path) -> dict[str, Any]:
    """The entries of the file at ``path``, or none if it is not one to trust and read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return {}
    with os.fdopen(fd, "rb") as file:
        try:
            trusted = _private(os.fstat(file.fileno())) and _private(path.parent.stat())
            data = file.read(MAX_FILE + 1) if trusted else b""
        except OSError:
            return {}
    if not trusted:
        log.warning("ignoring %s: not private to this user (mode 0600 in 0700)", path)
    entries: object = None
    if len(data) <= MAX_FILE and data.startswith(_HEADER):
        with contextlib.suppress(EOFError, ValueError, TypeError):
            entries = marshal.loads(data[len(_HEADER) :])  # noqa: S302 - our own file, checked
    if not isinstance(entries, dict):
        return {}
    return {
        k: v for k, v in entries.items() if isinstance(k, str) and isinstance(v, types.CodeType)
    }


def _private(info: os.stat_result) -> bool:
    """Owned by this user and writable by nobody else."""
    return info.st_uid == os.getuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _create_fn(
    name: str,
    args: list[str],
    body: list[str],
    *,
    globals: dict[str, Any] | None = None,  # noqa: A002 - as dataclasses names it
    locals: dict[str, Any] | None = None,  # noqa: A002 - as dataclasses names it
    return_type: Any = dataclasses.MISSING,
) -> Any:
    """``dataclasses._create_fn`` of 3.11, its compile served by the cache.

    The text is built exactly as there, so a cached code is the compile of it.
    """
    assert _cache is not None  # noqa: S101 - installed with it
    if locals is None:
        locals = {}  # noqa: A001
    return_annotation = ""
    if return_type is not dataclasses.MISSING:
        locals["_return_type"] = return_type
        return_annotation = "->_return_type"
    text = f" def {name}({','.join(args)}){return_annotation}:\n"
    text += "\n".join(f"  {line}" for line in body)
    text = f"def __create_fn__({', '.join(locals.keys())}):\n{text}\n return {name}"
    namespace: dict[str, Any] = {}
    exec(_cache.code(text), globals, namespace)  # noqa: S102 - dataclasses' own code
    return namespace["__create_fn__"](**locals)


def main() -> None:
    """``python -m paglets.runtime.dataclasscode``: fill the cache with a daemon's classes."""
    # the module, not this ``__main__`` copy of it: paglets.cli.host installs that one
    module = importlib.import_module("paglets.runtime.dataclasscode")
    module.install(attrs=True)
    for name in DAEMON_MODULES:
        importlib.import_module(name)
    with contextlib.suppress(Exception):
        module.save(force=True)


if __name__ == "__main__":
    main()
