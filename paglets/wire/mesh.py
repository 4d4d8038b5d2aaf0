"""``HostRecord``: one host of the mesh, as gossip carries it and ``/v1/mesh/hosts`` lists it.

Decoded by hand, strictly: every known field is type-checked and range-checked,
and a record costs a few µs to decode, so a gossip round with the whole table
stays cheap. A field this code does not know, from a host of newer code, is
kept as it came (`HostRecord.extra`, bounded in number and size), covered by the
signature and passed on with the record, and otherwise ignored: so hosts of two
versions read each other's records while a mesh is updated one host at a time. The host name is
checked by `check_id` (`IdKind.HOST`), every URL by `check_url`, every
number is finite and in range, and lists and strings are bounded.

A record carries its host's Ed25519 public key and the host's signature over
`HostRecord.signed_bytes`; what the signature covers, and what it leaves out
(``online`` and ``last_seen``, which relaying hosts rewrite), is said there.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import hashlib
import json
import math
import re
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Final
from urllib.parse import urlsplit

from paglets.core.contract import is_contract_name
from paglets.core.errors import ProtocolError, RequestError
from paglets.core.ids import IdKind, check_id
from paglets.wire.resources import HostResources

MESH_SERVICE_TYPE = "_paglets._tcp.local."

URL_LIMIT: Final = 512
"""The longest URL a record or an announcement may carry."""
MAX_URLS: Final = 16
MAX_TAGS: Final = 64
MAX_PROPERTIES: Final = 64
MAX_SERVICES: Final = 64
_SHORT: Final = 128  # versions, tags, property keys
_LONG: Final = 1024  # property values
MAX_HEARTBEAT: Final = 2**53
CLOCK_SKEW_US: Final = 86_400 * 1_000_000
"""How far past this host's clock an incarnation (µs) may be: a day."""
PUBLIC_KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
_SIGNED_PREFIX: Final = b"paglets-host-record-v1\n"
MAX_EXTRA_FIELDS: Final = 16
MAX_EXTRA_BYTES: Final = 4 * 1024
"""At most this many fields of newer code in one record, this long as JSON in all."""
_EXTRA_NAME: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode
_dumps_sorted = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, sort_keys=True).encode


def _check_extra(extra: dict[str, Any]) -> None:
    """Bound the fields of newer code a record may carry; `ProtocolError` if over."""
    if len(extra) > MAX_EXTRA_FIELDS:
        raise ProtocolError(
            f"a host record carries {len(extra)} fields this host does not know "
            f"({sorted(extra)[:8]}...); the limit is {MAX_EXTRA_FIELDS}"
        )
    for name in extra:
        if not _EXTRA_NAME.fullmatch(name):
            raise ProtocolError(
                f"unknown host record field {name!r:.80}: the name of a field of newer "
                "code is lower-case letters, digits and '_', at most 64"
            )
    size = len(_dumps(extra))
    if size > MAX_EXTRA_BYTES:
        raise ProtocolError(
            f"the host record's fields of newer code {sorted(extra)} take {size} bytes "
            f"as JSON; the limit is {MAX_EXTRA_BYTES}"
        )


def check_url(value: object, what: str = "url") -> str:
    """``value`` if it is a URL a host may publish; `ProtocolError` saying what is wrong.

    An ``http`` or ``https`` URL of printable ASCII, at most `URL_LIMIT`
    characters, with a host, a valid port if any, a path if any, and no user
    info, query or fragment. The verdicts are cached: gossip brings the same URLs
    every round.
    """
    if not isinstance(value, str) or not value:
        raise ProtocolError(f"{what} must be a non-empty string")
    if len(value) > URL_LIMIT:
        raise ProtocolError(f"{what} is {len(value)} characters long; the limit is {URL_LIMIT}")
    problem = _url_problem(value)
    if problem is not None:
        raise ProtocolError(f"{what} {value[:80]!r} {problem}")
    return value


_PRINTABLE: Final = re.compile(r"[!-~]+")


@functools.lru_cache(maxsize=4096)
def _url_problem(value: str) -> str | None:
    if _PRINTABLE.fullmatch(value) is None:
        return "has a space, a control or a non-ASCII character"
    parts = urlsplit(value)
    port_ok = True
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        port_ok = False
    problems = [
        (parts.scheme not in ("http", "https"), "must start with http:// or https://"),
        ("@" in parts.netloc, "must not carry a user name or password"),
        (not parts.hostname, "names no host"),
        (not port_ok, "has an invalid port"),
        (
            bool(parts.query or parts.fragment) or value.endswith(("?", "#")),
            "must not have a query or a fragment",
        ),
    ]
    return next((problem for bad, problem in problems if bad), None)


def fingerprint(public_key: str | None) -> str:
    """``SHA256:<base64>`` of a host's public key, as SSH shows keys; ``-`` for none."""
    if public_key is None:
        return "-"
    digest = hashlib.sha256(base64.b64decode(public_key)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_str_dict(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def _is_opt_str(value: object) -> bool:
    return value is None or isinstance(value, str)


def _b64_of(size: int) -> Any:
    def check(value: object) -> bool:
        if value is None:
            return True
        if not isinstance(value, str) or len(value) != 4 * ((size + 2) // 3):
            return False
        try:
            return len(base64.b64decode(value, validate=True)) == size
        except (binascii.Error, ValueError):
            return False

    return check


def _in_range(key: str, value: float, low: float, high: float) -> None:
    if (isinstance(value, float) and not math.isfinite(value)) or not low <= value <= high:
        raise ProtocolError(
            f"host record field {key!r} is {value!r:.40}; expected {low:g}..{high:g}"
        )


def _short(key: str, value: str | None, limit: int = _SHORT) -> None:
    if value is not None and len(value) > limit:
        raise ProtocolError(
            f"host record field {key!r} is {len(value)} characters long; the limit is {limit}"
        )


class UpdateState(StrEnum):
    """Where a host that follows a git branch (``--git-auto-update``) is in an update."""

    PENDING = "pending"
    """It wants to move to a newer commit and waits for the mesh's update lease."""
    UPDATING = "updating"
    """It holds the lease: pulling, syncing, checking and restarting on the commit."""
    FAILED = "failed"
    """Its last update failed; it runs its old commit (``reason`` says why)."""


_UPDATE_STATES: Final = frozenset(s.value for s in UpdateState)
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with each control character (line breaks, escapes) made a space."""
    return _CONTROL.sub(" ", text)


@dataclass(frozen=True, slots=True)
class UpdateStatus:
    """A host's auto-update state, as its record carries it (``None`` when idle).

    Attributes:
        state: the phase.
        commit: the commit it moves to (``pending``, ``updating``) or failed on.
        reason: for ``failed``: what went wrong, in a sentence.
    """

    state: UpdateState
    commit: str | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"state": self.state.value, "commit": self.commit, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: Any) -> UpdateStatus:
        """Decode the JSON form strictly; `ProtocolError` names what is wrong."""
        if not isinstance(data, dict) or data.keys() != {"state", "commit", "reason"}:
            raise ProtocolError(
                "host record field 'update' must be null or an object of state, commit, reason"
            )
        state, commit, reason = data["state"], data["commit"], data["reason"]
        if state not in _UPDATE_STATES:
            raise ProtocolError(f"host record field 'update' has an unknown state {state!r:.40}")
        if not _is_opt_str(commit) or not isinstance(reason, str):
            raise ProtocolError("host record field 'update' has a commit or reason of a bad type")
        if printable(reason) != reason or (commit is not None and printable(commit) != commit):
            raise ProtocolError("host record field 'update' holds control characters")
        _short("update.commit", commit)
        _short("update.reason", reason, _LONG)
        return cls(UpdateState(state), commit, reason)


@dataclass(frozen=True, slots=True)
class HostRecord:
    """What the mesh knows of one host.

    Attributes:
        name: the host's name, unique in the mesh.
        url: the URL it publishes (``--public-url``, else its first bound address).
        mesh_version: its ``--mesh-version``; only hosts of the same version are
            movement targets.
        protocol_version: the version of the ``/v1`` wire protocol it speaks.
        version: the paglets package version it runs.
        commit: the git commit it runs from, when started from a checkout.
        online: whether its heartbeat is recent, as the host asked judges it.
        last_seen: when its latest heartbeat was produced (seconds since the epoch,
            in the clock of the host asked).
        paglets: how many paglets it holds.
        tags: its ``--tag`` values.
        properties: its ``--property KEY=VALUE`` pairs.
        urls: every URL it answers on (the published one first).
        incarnation: when this process of the host started (µs since the epoch);
            a restart gets a larger one.
        heartbeat: a counter the host increments every gossip round.
        trusts_code: whether it runs paglet classes sent by value by key holders
            (``--trust-code-by-value``).
        public_key: the host's Ed25519 identity (32 bytes, base64), pinned by
            its peers on first sight.
        signature: the host's signature over `signed_bytes` (64 bytes, base64).
        update: its auto-update state (`UpdateStatus`); ``None`` when idle or not
            following a branch. Left out of the JSON form when ``None``, so hosts
            of older code still read the records of idle hosts.
        services: the contracts of the resident services it serves (advertised
            before they run; docs/services.md). Left out of the JSON form when
            empty, as ``update`` is.
        resources: what it has to spare (CPUs, load, memory, work-dir disk,
            paglet counts; `paglets.wire.resources.HostResources`), sampled
            every few seconds; ``None`` from a host that does not publish it.
            Left out of the JSON form when ``None``.
        extra: the fields of newer code this code does not know, by name, as
            they came (JSON values): signed and passed on, else ignored.
    """

    name: str
    url: str
    mesh_version: str
    protocol_version: int
    version: str
    commit: str | None = None
    online: bool = True
    last_seen: float = 0.0
    paglets: int = 0
    tags: list[str] = field(default_factory=list)
    properties: dict[str, str] = field(default_factory=dict)
    urls: list[str] = field(default_factory=list)
    incarnation: int = 0
    heartbeat: int = 0
    trusts_code: bool = False
    public_key: str | None = None
    signature: str | None = None
    update: UpdateStatus | None = None
    services: list[str] = field(default_factory=list)
    resources: HostResources | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    _CHECKS: ClassVar[dict[str, tuple[Any, str]]] = {
        "name": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
        "url": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
        "mesh_version": (lambda v: isinstance(v, str), "a string"),
        "protocol_version": (_is_int, "an integer"),
        "version": (lambda v: isinstance(v, str), "a string"),
        "commit": (_is_opt_str, "a string or null"),
        "online": (lambda v: isinstance(v, bool), "a boolean"),
        "last_seen": (_is_number, "a number"),
        "paglets": (_is_int, "an integer"),
        "tags": (_is_str_list, "a list of strings"),
        "properties": (_is_str_dict, "an object of strings"),
        "urls": (_is_str_list, "a list of strings"),
        "incarnation": (_is_int, "an integer"),
        "heartbeat": (_is_int, "an integer"),
        "trusts_code": (lambda v: isinstance(v, bool), "a boolean"),
        "public_key": (_b64_of(PUBLIC_KEY_BYTES), "null or 32 bytes in base64"),
        "signature": (_b64_of(SIGNATURE_BYTES), "null or 64 bytes in base64"),
        "update": (lambda v: v is None or isinstance(v, dict), "null or an object"),
        "services": (_is_str_list, "a list of strings"),
        "resources": (lambda v: v is None or isinstance(v, dict), "null or an object"),
    }
    _REQUIRED: ClassVar[frozenset[str]] = frozenset(
        {"name", "url", "mesh_version", "protocol_version", "version"}
    )

    def __getitem__(self, key: str) -> Any:
        """Mapping-style access to fields (``record["online"]``)."""
        if key not in self._CHECKS:
            raise KeyError(key)
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        data: dict[str, Any] = {
            "name": self.name,
            "url": self.url,
            "mesh_version": self.mesh_version,
            "protocol_version": self.protocol_version,
            "version": self.version,
            "commit": self.commit,
            "online": self.online,
            "last_seen": self.last_seen,
            "paglets": self.paglets,
            "tags": list(self.tags),
            "properties": dict(self.properties),
            "urls": list(self.urls),
            "incarnation": self.incarnation,
            "heartbeat": self.heartbeat,
            "trusts_code": self.trusts_code,
            "public_key": self.public_key,
            "signature": self.signature,
        }
        if self.update is not None:
            data["update"] = self.update.to_dict()
        if self.services:
            data["services"] = list(self.services)
        if self.resources is not None:
            data["resources"] = self.resources.to_dict()
        data.update(self.extra)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> HostRecord:
        """Decode the JSON form; `ProtocolError` names what is wrong."""
        if not isinstance(data, dict):
            raise ProtocolError("a host record must be a JSON object")
        missing = cls._REQUIRED - data.keys()
        if missing:
            raise ProtocolError(f"host record lacks fields: {sorted(missing)}")
        extra: dict[str, Any] = {}
        for key, value in data.items():
            known = cls._CHECKS.get(key)
            if known is None:
                extra[key] = value
                continue
            check, word = known
            if not check(value):
                raise ProtocolError(f"host record field {key!r} must be {word}, not {value!r:.80}")
        if extra:
            _check_extra(extra)
        update, resources = data.get("update"), data.get("resources")
        fields = {
            k: v for k, v in data.items() if k not in extra and k not in ("update", "resources")
        }
        record = cls(
            **fields,
            extra=extra,
            update=None if update is None else UpdateStatus.from_dict(update),
            resources=None
            if resources is None
            else HostResources.from_dict(resources, "host record field 'resources'"),
        )
        record._check_ranges()
        if "last_seen" in data:
            object.__setattr__(record, "last_seen", float(data["last_seen"]))
        return record

    def _check_ranges(self) -> None:
        try:
            check_id(self.name, IdKind.HOST)
        except RequestError as exc:
            raise ProtocolError(str(exc)) from None
        check_url(self.url, "host record field 'url'")
        if len(self.urls) > MAX_URLS:
            raise ProtocolError(
                f"a host record lists {len(self.urls)} urls; the limit is {MAX_URLS}"
            )
        for url in self.urls:
            check_url(url, "a url in host record field 'urls'")
        _short("mesh_version", self.mesh_version)
        _short("version", self.version)
        _short("commit", self.commit)
        if len(self.tags) > MAX_TAGS or len(self.properties) > MAX_PROPERTIES:
            raise ProtocolError(
                f"a host record has at most {MAX_TAGS} tags and {MAX_PROPERTIES} properties"
            )
        for tag in self.tags:
            _short("tags", tag)
        for key, value in self.properties.items():
            _short("properties", key)
            _short("properties", value, _LONG)
        if len(self.services) > MAX_SERVICES:
            raise ProtocolError(
                f"a host record lists {len(self.services)} services; the limit is {MAX_SERVICES}"
            )
        for contract in self.services:
            if not is_contract_name(contract):
                raise ProtocolError(
                    f"host record field 'services' holds {contract!r:.80}, not a contract name"
                )
        _in_range("protocol_version", self.protocol_version, 0, 2**16)
        _in_range("last_seen", self.last_seen, 0, 2**40)
        _in_range("paglets", self.paglets, 0, 2**31)
        _in_range("heartbeat", self.heartbeat, 0, MAX_HEARTBEAT)
        _in_range("incarnation", self.incarnation, 0, time.time_ns() // 1000 + CLOCK_SKEW_US)

    def signed_bytes(self) -> bytes:
        """What the host's signature covers: everything its owner says of itself.

        Every field but ``online`` and ``last_seen`` (each relaying host
        rewrites those as it judges them) and the signature itself; ``update``
        ``services`` and ``resources`` only when set, so a host without them
        signs what older code signs.

        Then the `extra` fields, each as a one-key object, in the order of their
        names. **A field added to the record from now on is signed that way**
        (after ``resources``, in name order with any other new field): that is
        how code that does not know it computes the same bytes, so the
        signature of a host of newer code checks out on a host of older code.
        """
        body = [
            self.name,
            self.url,
            self.mesh_version,
            self.protocol_version,
            self.version,
            self.commit,
            self.paglets,
            self.tags,
            sorted(self.properties.items()),
            self.urls,
            self.incarnation,
            self.heartbeat,
            self.public_key,
            self.trusts_code,
        ]
        if self.update is not None:
            body.append(self.update.to_dict())
        if self.services:
            body.append({"services": list(self.services)})
        if self.resources is not None:
            body.append({"resources": self.resources.to_dict()})
        head = _dumps(body)
        if self.extra:
            tail = ",".join(_dumps_sorted({k: self.extra[k]}) for k in sorted(self.extra))
            head = f"{head[:-1]},{tail}]"
        return _SIGNED_PREFIX + head.encode()

    def replace(self, **changes: Any) -> HostRecord:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)

    def answers_on(self, url: str) -> bool:
        """Whether ``url`` is one of this host's URLs."""
        url = url.rstrip("/")
        return url == self.url or url in self.urls
