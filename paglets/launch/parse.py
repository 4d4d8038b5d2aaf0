"""Read a launch file into a `LaunchConfig`, or say exactly what is wrong and where.

Every error is a `ConfigurationError` whose message starts with ``file:line:``,
says what is wrong and ends with the fix (a line that would be right). Unknown
tables and keys are errors, not ignored: a typo never passes silently.

A new table of plain keys is one more entry of `SECTIONS` (a check and an
example per key) and a field of `LaunchConfig`; an array of tables, like
``[[paglets]]`` and ``[[services]]``, gets a reader method like `_Reader.paglets`.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from paglets.core.contract import CONTRACT_NAME
from paglets.core.errors import ConfigurationError, RequestError
from paglets.core.ids import IdKind, is_valid_id
from paglets.launch.lines import KeyLines
from paglets.launch.lines import Path as KeyPath
from paglets.launch.model import (
    ComputeSection,
    HostSection,
    LaunchConfig,
    LimitsSection,
    ModulesSection,
    ServiceEntry,
    StartupPaglet,
)
from paglets.launch.sizes import SIZE_HINT, parse_size
from paglets.wire.modules import parse_class_path

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

MAX_STARTUP_PAGLETS: Final = 1000
MAX_SERVICES: Final = 64  # a host's record carries the contracts it serves: keep it small
_SERVICE_NAME: Final = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_PREFIX: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_LINE: Final = re.compile(r"\(at line (\d+), column \d+\)$")


class _InvalidError(ValueError):
    """A value of the wrong kind; the parser adds where it is and how to fix it."""


@dataclass(frozen=True, slots=True)
class _Key:
    check: Callable[[object], Any]
    example: str


# -- value checks: each returns the typed value or raises _InvalidError ---------------------


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _InvalidError(f"must be a non-empty string, not {value!r}")
    return value


def _identifier(kind: IdKind) -> Callable[[object], str]:
    """A check that a value is an identifier of ``kind`` (`paglets.core.ids`)."""

    def check(value: object) -> str:
        if not is_valid_id(value, kind):
            raise _InvalidError(
                f"must be 1 to {kind.limit} letters, digits, '.', '_' and '-', "
                f"starting with a letter or a digit, not {value!r}"
            )
        return str(value)

    return check


_host_name = _identifier(IdKind.HOST)


def _strings(value: object, each: Callable[[object], str] = _text) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _InvalidError(f"must be a list of strings, not {value!r}")
    return tuple(each(item) for item in value)


def _tag(value: object) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() or c == "," for c in value):
        raise _InvalidError(f"has tag {value!r}: a tag is a non-empty string without spaces or ','")
    return value


def _url(value: object) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise _InvalidError(f"has {value!r}: a peer is a URL starting with http:// or https://")
    return value.rstrip("/")


def _prefix(value: object) -> str:
    if not isinstance(value, str) or _PREFIX.fullmatch(value) is None:
        raise _InvalidError(f"has {value!r}: a module is dotted Python names, e.g. 'myapp.agents'")
    return value


def _file_root(value: object) -> str:
    text = _text(value)
    if not text.startswith("/") or "\x00" in text:
        raise _InvalidError(f"must be an absolute path, not {text!r}")
    return text


def _properties(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _InvalidError(f'must be a table of KEY = "VALUE", not {value!r}')
    for key, item in value.items():
        if not key or "=" in key:
            raise _InvalidError(f"has key {key!r}: a property key is non-empty, without '='")
        if not isinstance(item, str):
            raise _InvalidError(f"{key} must be a string (quote it), not {item!r}")
    return dict(value)


def _seconds(value: object) -> float:
    if not _is_number(value) or not 0 < value < math.inf:  # type: ignore[operator]
        raise _InvalidError(f"must be a positive number of seconds, not {value!r}")
    return float(value)  # type: ignore[arg-type]


def _count(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise _InvalidError(f"must be a whole number of at least 1, not {value!r}")
    return value


def _size(minimum: int, shown: str) -> Callable[[object], int]:
    def check(value: object) -> int:
        size: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            size = value
        elif isinstance(value, str):
            size = parse_size(value)
        if size is None:
            raise _InvalidError(f"is {value!r}, not a size: {SIZE_HINT}")
        if size < minimum:
            raise _InvalidError(f"must be at least {shown}, not {value!r}")
        return size

    return check


def _json_value(value: object) -> Any:
    """A TOML value a paglet's state can hold (no dates or times: JSON has none)."""
    if isinstance(value, str | bool | int) or (isinstance(value, float) and math.isfinite(value)):
        return value
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    raise _InvalidError(
        f"holds {value!r}: state values are strings, numbers, booleans, lists, tables"
    )


def _state(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _InvalidError(f"must be a table of the state's fields, not {value!r}")
    return {k: _json_value(v) for k, v in value.items()}


def _class_path(value: object) -> str:
    if not isinstance(value, str) or ":" not in value:
        raise _InvalidError(f"must be 'module:Class', with a colon before the class, not {value!r}")
    try:
        parse_class_path(value)
    except RequestError as exc:
        raise _InvalidError(f"is not a class path: {exc}") from None
    return value


_agent_id = _identifier(IdKind.AGENT)


def _service_name(value: object) -> str:
    if not isinstance(value, str) or _SERVICE_NAME.fullmatch(value) is None:
        raise _InvalidError(
            f"must be 1 to 64 lower-case letters, digits, '_' and '-', starting with a "
            f"letter, not {value!r}"
        )
    return value


def _contract(value: object) -> str:
    if not isinstance(value, str) or len(value) > IdKind.SERVICE.limit:
        raise _InvalidError(f"must be a contract name such as 'echo.v1', not {value!r}")
    if CONTRACT_NAME.fullmatch(value) is None:
        raise _InvalidError(
            f"is {value!r}: a contract is dotted lower-case words ending in a version"
        )
    return value


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise _InvalidError(f"must be true or false, not {value!r}")
    return value


def _load(value: object) -> float:
    if not _is_number(value) or not 0 < value < math.inf:  # type: ignore[operator]
        raise _InvalidError(f"must be a positive number (load average per CPU), not {value!r}")
    return float(value)  # type: ignore[arg-type]


def _choice(*allowed: str) -> Callable[[object], str]:
    def check(value: object) -> str:
        if value not in allowed:
            shown = " or ".join(repr(a) for a in allowed)
            raise _InvalidError(f"must be {shown}, not {value!r}")
        return str(value)

    return check


SECTIONS: Final[Mapping[str, Mapping[str, _Key]]] = {
    "host": {
        "name": _Key(_host_name, 'name = "alpha"'),
        "mesh_version": _Key(_text, 'mesh_version = "dev"'),
        "tags": _Key(lambda v: _strings(v, _tag), 'tags = ["gpu", "lab"]'),
        "properties": _Key(_properties, 'properties = { room = "b12" }'),
        "peers": _Key(lambda v: _strings(v, _url), 'peers = ["http://10.0.0.2:8765"]'),
        "file_roots": _Key(lambda v: _strings(v, _file_root), 'file_roots = ["/srv/data"]'),
    },
    "limits": {
        "header_timeout": _Key(_seconds, "header_timeout = 10.0"),
        "idle_timeout": _Key(_seconds, "idle_timeout = 75.0"),
        "max_connections": _Key(_count, "max_connections = 1024"),
        "max_envelope_size": _Key(_size(1024, "1KiB"), 'max_envelope_size = "4GiB"'),
        "max_transfers": _Key(_count, "max_transfers = 16"),
        "transfer_min_rate": _Key(_size(1, "1 byte"), 'transfer_min_rate = "64KiB"'),
        "max_paglets": _Key(_count, "max_paglets = 1000"),
        "max_child_memory": _Key(_size(1 << 20, "1MiB"), 'max_child_memory = "8GiB"'),
        "artifact_quota": _Key(_size(0, "0 bytes"), 'artifact_quota = "1GiB"'),
    },
    "modules": {
        "allow": _Key(lambda v: _strings(v, _prefix), 'allow = ["myapp"]'),
        "preload": _Key(lambda v: _strings(v, _prefix), 'preload = ["myapp.agents"]'),
    },
    "compute": {
        "cores": _Key(_count, "cores = 8"),
        "ram": _Key(_size(1 << 20, "1MiB"), 'ram = "16GiB"'),
        "tmp": _Key(_size(0, "0"), 'tmp = "50GiB"'),
        "max_load_per_cpu": _Key(_load, "max_load_per_cpu = 1.0"),
        "max_queued": _Key(_count, "max_queued = 10000"),
    },
}
PAGLET_KEYS: Final[Mapping[str, _Key]] = {
    "id": _Key(_agent_id, 'id = "greeter"'),
    "class": _Key(_class_path, 'class = "examples.counter:Counter"'),
    "state": _Key(_state, "state = { count = 0 }"),
}
SERVICE_KEYS: Final[Mapping[str, _Key]] = {
    "name": _Key(_service_name, 'name = "echo"'),
    "class": _Key(_class_path, 'class = "myapp.services:Echo"'),
    "contract": _Key(_contract, 'contract = "echo.v1"'),
    "where": _Key(lambda v: _strings(v, _tag), 'where = ["gpu"]'),
    "start": _Key(_choice("eager", "lazy"), 'start = "lazy"'),
    "scope": _Key(_choice("host", "mesh"), 'scope = "host"'),
    "state": _Key(_state, "state = { greeting = 'hi' }"),
    "idle_after": _Key(_seconds, "idle_after = 300"),
    "replicate": _Key(_bool, "replicate = true"),
}
TABLES: Final = (*SECTIONS, "paglets", "services")


class _Reader:
    """Parses one file's data, turning each bad value into a located error."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = KeyLines(text)

    def fail(self, where: KeyPath, message: str, fix: str) -> ConfigurationError:
        shown = ""
        for part in where:
            shown += f"[{part}]" if isinstance(part, int) else f".{part}" if shown else part
        if len(where) == 1:
            shown = f"[{shown}]"
        line = self.lines.line(where)
        return ConfigurationError(f"{self.path}:{line}: {shown} {message}; fix: {fix}")

    def table(
        self, data: object, where: KeyPath, keys: Mapping[str, _Key], example: str
    ) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(where, "must be a table", example)
        values: dict[str, Any] = {}
        for key, value in data.items():
            spec = keys.get(key)
            if spec is None:
                known = ", ".join(keys)
                raise self.fail((*where, key), "is not a known key", f"use one of: {known}")
            try:
                values[key] = spec.check(value)
            except _InvalidError as exc:
                raise self.fail((*where, key), str(exc), f"e.g. {spec.example}") from None
        return values

    def paglets(self, data: object) -> tuple[StartupPaglet, ...]:
        example = '[[paglets]] with id = "greeter" and class = "module:Class"'
        if not isinstance(data, list):
            raise self.fail(("paglets",), "must be an array of tables", f"write {example}")
        if len(data) > MAX_STARTUP_PAGLETS:
            raise self.fail(
                ("paglets",), f"has {len(data)} entries", f"keep to {MAX_STARTUP_PAGLETS}"
            )
        found: dict[str, StartupPaglet] = {}
        for index, entry in enumerate(data):
            where: KeyPath = ("paglets", index)
            values = self.table(entry, where, PAGLET_KEYS, example)
            for key in ("id", "class"):
                if key not in values:
                    raise self.fail(where, f"entry has no {key}", f"add {PAGLET_KEYS[key].example}")
            agent_id = values["id"]
            origin = f"{self.path}:{self.lines.line(where)}"
            if agent_id in found:
                raise self.fail(
                    (*where, "id"),
                    f"{agent_id!r} is the id of the entry at {found[agent_id].origin} too",
                    "give each startup paglet its own id",
                )
            found[agent_id] = StartupPaglet(
                agent_id, values["class"], values.get("state", {}), origin
            )
        return tuple(found.values())

    def services(self, data: object) -> tuple[ServiceEntry, ...]:
        example = "[[services]] with name, class and contract"
        if not isinstance(data, list):
            raise self.fail(("services",), "must be an array of tables", f"write {example}")
        if len(data) > MAX_SERVICES:
            raise self.fail(("services",), f"has {len(data)} entries", f"keep to {MAX_SERVICES}")
        found: dict[str, ServiceEntry] = {}
        contracts: dict[str, ServiceEntry] = {}
        for index, entry in enumerate(data):
            where: KeyPath = ("services", index)
            values = self.table(entry, where, SERVICE_KEYS, example)
            for key in ("name", "class", "contract"):
                if key not in values:
                    raise self.fail(
                        where, f"entry has no {key}", f"add {SERVICE_KEYS[key].example}"
                    )
            service = ServiceEntry(
                name=values["name"],
                class_path=values["class"],
                contract=values["contract"],
                where=values.get("where", ()),
                start=values.get("start", "lazy"),
                scope=values.get("scope", "host"),
                state=values.get("state", {}),
                idle_after=values.get("idle_after"),
                replicate=values.get("replicate", False),
                origin=f"{self.path}:{self.lines.line(where)}",
            )
            if service.replicate and service.scope != "mesh":
                raise self.fail(
                    (*where, "replicate"),
                    "is for a service that is one in the mesh",
                    'add scope = "mesh", or remove replicate',
                )
            for seen, key, what in (
                (found, "name", service.name),
                (contracts, "contract", service.contract),
            ):
                if what in seen:
                    raise self.fail(
                        (*where, key),
                        f"{what!r} is the {key} of the entry at {seen[what].origin} too",
                        f"give each service its own {key}",
                    )
                seen[what] = service
        return tuple(found.values())

    def config(self, data: dict[str, Any]) -> LaunchConfig:
        for name in data:
            if name not in TABLES:
                known = ", ".join(f"[{t}]" for t in TABLES)
                raise self.fail((name,), "is not a known table", f"use one of: {known}")
        sections = {
            name: self.table(data.get(name, {}), (name,), keys, f"write it as a [{name}] table")
            for name, keys in SECTIONS.items()
        }
        return LaunchConfig(
            path=self.path,
            host=HostSection(**sections["host"]),
            limits=LimitsSection(**sections["limits"]),
            modules=ModulesSection(**sections["modules"]),
            compute=ComputeSection(**sections["compute"]),
            paglets=self.paglets(data.get("paglets", [])),
            services=self.services(data.get("services", [])),
        )


def parse_launch(text: str, path: Path) -> LaunchConfig:
    """Parse the text of the launch file at ``path``.

    Raises:
        ConfigurationError: the text is not TOML, or holds an unknown table or key or a
            bad value; the message starts with ``path:line:`` and ends with the fix.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _LINE.search(message)
        line = match[1] if match else str(max(1, len(text.splitlines())))
        reason = _LINE.sub("", message).strip()
        raise ConfigurationError(
            f"{path}:{line}: not valid TOML ({reason}); fix: see https://toml.io"
        ) from None
    return _Reader(path, text).config(data)
