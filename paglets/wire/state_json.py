"""The JSON projection of paglet state, and the restricted decoder back from JSON.

`state_to_json` turns a `paglets.core.state.PagletState` into plain
JSON values. `state_from_json` rebuilds it, driven only by the type hints of
the state class: it constructs that dataclass, the dataclasses its hints name and
a fixed set of value types, and never looks anything up by a name found in the data.

======================  =====================================
Python                  JSON
======================  =====================================
dataclass               object of its fields
list, tuple             array
set, frozenset          array, sorted when the items sort
dict with str keys      object
Enum                    its value
datetime, date, time    ISO 8601 string
UUID, Path, Decimal     string
bytes, bytearray        ``{"$bytes": "<base64>"}``
======================  =====================================

Out-of-band bytes: given a ``blobs`` list, `state_to_json` leaves every
``bytes``/``bytearray`` of at least `BLOB_MIN` bytes out of the JSON, appends a
memoryview of it (no copy) to the list and writes ``{"$blob": <index>}`` in its
place. The movement envelope carries those bytes raw after the JSON, and
`state_from_json` takes them back through its own ``blobs`` argument, only
where the type hint is ``bytes`` or ``bytearray``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import datetime as dt
import functools
import json
import types
import uuid
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from enum import Enum
from pathlib import PurePath
from typing import Any, Literal, NewType, TypeVar, Union, get_args, get_origin, get_type_hints

from paglets.core.errors import InvalidStateError
from paglets.core.state import PagletState

__all__ = ["BLOB_MIN", "prepare", "state_from_json", "state_to_json"]

S = TypeVar("S", bound=PagletState)
_Blobs = Sequence[bytes | memoryview] | None

_BYTES_KEY = "$bytes"
_BLOB_KEY = "$blob"
BLOB_MIN = 1024
"""The size from which `state_to_json` moves bytes out of band, when asked to."""
_SUPPORTED = (
    "None, bool, int, float, str, list, tuple, set, frozenset, dict with str keys, "
    "dataclasses, Enum, datetime, date, time, UUID, Path, Decimal and bytes"
)
# Encoders of the leaf value types, tried in order (a datetime is a date).
_SCALARS: tuple[tuple[Any, Callable[[Any], Any]], ...] = (
    (type(None) | bool | int | float | str, lambda value: value),
    (dt.date | dt.time, lambda value: value.isoformat()),
    (uuid.UUID | PurePath | Decimal, str),
    (bytes | bytearray, lambda value: {_BYTES_KEY: base64.b64encode(value).decode("ascii")}),
)
# JSON values that encode as themselves (by exact type: bool is its own, an IntEnum is not).
_PLAIN = frozenset((type(None), bool, int, float, str))
# Item hints whose JSON values of exactly that type decode as they are.
_AS_IS = frozenset((bool, int, float, str))
# Value types rebuilt from a JSON string, by their exact class.
_FROM_STRING: dict[type, Callable[[str], Any]] = {
    dt.datetime: dt.datetime.fromisoformat,
    dt.date: dt.date.fromisoformat,
    dt.time: dt.time.fromisoformat,
    uuid.UUID: uuid.UUID,
    Decimal: Decimal,
}
# Containers without parameters decode their items as Any.
_BARE: dict[Any, Any] = {kind: kind[Any] for kind in (list, set, frozenset)}
_BARE |= {tuple: tuple[Any, ...], dict: dict[str, Any]}


def state_to_json(state: PagletState, blobs: list[memoryview] | None = None) -> dict[str, Any]:
    """Project paglet state onto JSON-compatible values.

    Args:
        state: a dataclass instance, normally a `PagletState` subclass.
        blobs: if a list, bytes values of at least `BLOB_MIN` bytes are appended
            to it as memoryviews and encoded as ``{"$blob": <index>}``; if
            None, all bytes are encoded as base64.

    Returns:
        A dict holding only dicts, lists, str, int, float, bool and None.

    Raises:
        InvalidStateError: a value of an unsupported type, or a dict with a
            non-string key; the message names the field path, e.g.
            ``state.items[2].when``.
    """
    if not dataclasses.is_dataclass(state) or isinstance(state, type):
        raise InvalidStateError(f"state must be a dataclass instance, not {_name(type(state))}")
    try:
        return _encode_dataclass(state, "state", blobs)
    except RecursionError:
        raise InvalidStateError("state is nested too deeply (or refers to itself)") from None


def _encode_dataclass(value: Any, path: str, blobs: list[memoryview] | None) -> dict[str, Any]:
    cls: type = type(value)
    return {name: _encode(getattr(value, name), f"{path}.{name}", blobs) for name in _fields(cls)}


def _plain(values: Any) -> bool:
    """Whether every item is a JSON value of its own: encoded as it is, one by one."""
    return all(type(item) in _PLAIN for item in values)


def _encode(value: Any, path: str, blobs: list[memoryview] | None) -> Any:
    if type(value) in _PLAIN:  # most values: checked by exact type, so no subclass slips by
        return value
    if isinstance(value, Enum):
        return _encode(value.value, path, blobs)
    if blobs is not None and isinstance(value, bytes | bytearray) and len(value) >= BLOB_MIN:
        blobs.append(memoryview(value))
        return {_BLOB_KEY: len(blobs) - 1}
    for kinds, convert in _SCALARS:
        if isinstance(value, kinds):
            return convert(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _encode_dataclass(value, path, blobs)
    if isinstance(value, list | tuple | set | frozenset | dict):
        return _encode_container(value, path, blobs)
    raise InvalidStateError(
        f"cannot encode {path}: type {_name(type(value))} is not supported in paglet state "
        f"(supported: {_SUPPORTED})"
    )


def _encode_container(value: Any, path: str, blobs: list[memoryview] | None) -> Any:
    if isinstance(value, dict):
        bad = [key for key in value if not isinstance(key, str)]
        if bad:
            raise InvalidStateError(
                f"cannot encode {path}: dict key {bad[0]!r} is a {_name(type(bad[0]))}; "
                "state dicts must have str keys"
            )
        if _plain(value.values()):
            return dict(value)
        return {key: _encode(item, f"{path}[{key!r}]", blobs) for key, item in value.items()}
    if _plain(value):
        items = list(value)
    else:
        items = [_encode(item, f"{path}[{i}]", blobs) for i, item in enumerate(value)]
    return items if isinstance(value, list | tuple) else _stable_order(items)


def _stable_order(items: list[Any]) -> list[Any]:
    try:
        return sorted(items)
    except TypeError:  # mixed or unorderable items: still the same order every time
        return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))


def state_from_json(
    cls: type[S], data: Mapping[str, Any], blobs: Sequence[bytes | memoryview] | None = None
) -> S:
    """Rebuild state of class ``cls`` from its JSON projection, strictly.

    Only ``cls``, dataclasses reachable through its field type hints and the
    fixed value types of this module are ever constructed. Missing fields take
    their defaults; ``Any`` fields keep the decoded JSON as is; union members
    are tried in order.

    Args:
        cls: the state dataclass.
        data: the JSON object, as produced by `state_to_json`.
        blobs: the out-of-band bytes that ``{"$blob": <index>}`` values refer
            to, in order; None when the data cannot hold such references.

    Returns:
        A new instance of ``cls``.

    Raises:
        InvalidStateError: unknown or missing fields, or a value that does not
            fit its type hint; the message names the field path, the expected
            and the actual type; also a ``$blob`` reference where the hint is not
            bytes, or whose index is not one of ``blobs``.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise InvalidStateError(f"state class must be a dataclass, not {cls!r}")
    try:
        state: S = _decode_dataclass(cls, data, "state", blobs)
    except RecursionError:
        raise InvalidStateError("state is nested too deeply to decode") from None
    return state


def prepare(cls: type) -> None:
    """Resolve, ahead of need, the type hints decoding ``cls`` will look up.

    For ``cls`` and every dataclass reachable through its hints; a hint that
    cannot be resolved is left for decoding to report. A process that forks
    children (the zygote) calls this once so that no child pays for it. Runs
    no code of the classes, only the evaluation of their annotations.
    """
    seen: set[Any] = set()
    pending: list[Any] = [cls]
    while pending:
        tp = pending.pop()
        try:
            if tp in seen:
                continue
            seen.add(tp)
        except TypeError:  # an unhashable hint: nothing to cache for it
            continue
        pending.extend(get_args(tp))
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            with contextlib.suppress(InvalidStateError):
                pending.extend(_hints(tp).values())


@functools.lru_cache(maxsize=256)
def _hints(cls: type) -> dict[str, Any]:
    try:
        return get_type_hints(cls)
    except Exception as exc:
        raise InvalidStateError(f"cannot resolve the type hints of {_name(cls)}: {exc}") from exc


@functools.lru_cache(maxsize=256)
def _fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _decode_dataclass(cls: type, data: Any, path: str, blobs: _Blobs) -> Any:
    if not isinstance(data, Mapping):
        raise _mismatch(path, _name(cls) + " (an object)", data)
    fields = _fields(cls)
    unknown = [key for key in data if key not in fields]
    if unknown:
        names = ", ".join(repr(key) for key in unknown)
        raise InvalidStateError(f"{path}: unknown field {names} for {_name(cls)}")
    hints = _hints(cls)
    init: dict[str, Any] = {}
    late: dict[str, Any] = {}
    for name, field in fields.items():
        if name in data:
            target = init if field.init else late
            target[name] = _decode(hints[name], data[name], f"{path}.{name}", blobs)
        elif field.init and field.default is field.default_factory is dataclasses.MISSING:
            raise InvalidStateError(f"{path}: missing required field {name!r} of {_name(cls)}")
    try:
        obj = cls(**init)
    except (TypeError, ValueError) as exc:
        raise InvalidStateError(f"{path}: {_name(cls)} rejected the data: {exc}") from exc
    for name, value in late.items():  # init=False fields: restore after construction
        object.__setattr__(obj, name, value)
    return obj


def _decode(tp: Any, value: Any, path: str, blobs: _Blobs) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if isinstance(tp, NewType):
        return _decode(tp.__supertype__, value, path, blobs)
    if origin is Union or origin is types.UnionType:
        return _decode_union(tp, args, value, path, blobs)
    if origin is Literal:
        for arg in args:
            plain = arg.value if isinstance(arg, Enum) else arg
            if plain == value and type(plain) is type(value):
                return arg
        raise _mismatch(path, _name(tp), value)
    if tp in _BARE or origin in _BARE:
        return _decode_container(
            tp, origin or tp, args or get_args(_BARE[origin or tp]), value, path, blobs
        )
    if isinstance(tp, type) and origin is None:
        return _decode_class(tp, value, path, blobs)
    raise InvalidStateError(f"{path}: unsupported type hint {_name(tp)} (supported: {_SUPPORTED})")


def _decode_container(  # noqa: PLR0917 - private, one call site
    tp: Any, origin: Any, args: Any, value: Any, path: str, blobs: _Blobs
) -> Any:
    if origin is dict:
        if args[0] is not str:
            raise InvalidStateError(f"{path}: unsupported type hint {_name(tp)}; keys must be str")
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise _mismatch(path, _name(tp), value)
        if _as_is(args[1], value.values()):
            return dict(value)
        return {k: _decode(args[1], v, f"{path}[{k!r}]", blobs) for k, v in value.items()}
    if not isinstance(value, list):
        raise _mismatch(path, _name(tp), value)
    if origin is not tuple or args[-1] is Ellipsis:
        if _as_is(args[0], value):
            return origin(value)
        return origin(_decode(args[0], v, f"{path}[{i}]", blobs) for i, v in enumerate(value))
    if len(args) != len(value):
        raise InvalidStateError(f"{path}: expected {_name(tp)}, got an array of {len(value)}")
    items = zip(args, value, strict=True)
    return tuple(_decode(a, v, f"{path}[{i}]", blobs) for i, (a, v) in enumerate(items))


def _as_is(hint: Any, values: Any) -> bool:
    """Whether every value already is what ``hint`` decodes it to (no item can fail).

    Only for hints of plain JSON types (and ``Any``), checked by exact type: a
    bool is not an int here, and an int is not a float (it decodes to one). Any
    other case goes item by item, which also names the item that does not fit.
    """
    if hint is Any:
        return True
    return hint in _AS_IS and all(type(v) is hint for v in values)


def _decode_union(tp: Any, args: tuple[Any, ...], value: Any, path: str, blobs: _Blobs) -> Any:
    if value is None and type(None) in args:
        return None
    members = [arg for arg in args if arg is not type(None)]
    if len(members) == 1:  # Optional[X]: X's own error is the useful one
        return _decode(members[0], value, path, blobs)
    for member in members:
        try:
            return _decode(member, value, path, blobs)
        except InvalidStateError:
            continue
    raise _mismatch(path, _name(tp), value)


def _decode_class(tp: type, value: Any, path: str, blobs: _Blobs) -> Any:
    if dataclasses.is_dataclass(tp):
        return _decode_dataclass(tp, value, path, blobs)
    if issubclass(tp, Enum):
        for member in tp:
            if member.value == value and isinstance(member.value, bool) == isinstance(value, bool):
                return member
        raise _mismatch(path, f"{_name(tp)} (one of {[m.value for m in tp]})", value)
    if tp in (type(None), bool, int, float, str):
        kinds = int | float if tp is float else tp
        if not isinstance(value, kinds) or (tp is not bool and isinstance(value, bool)):
            raise _mismatch(path, _name(tp), value)
        return float(value) if tp is float and isinstance(value, int) else value
    if tp is bytes or tp is bytearray:
        return _decode_bytes(tp, value, path, blobs)
    return _decode_string(tp, value, path)


def _decode_bytes(tp: type[bytes | bytearray], value: Any, path: str, blobs: _Blobs) -> Any:
    if isinstance(value, Mapping) and set(value) == {_BLOB_KEY}:
        index = value[_BLOB_KEY]
        if blobs is None:
            raise InvalidStateError(
                f'{path}: a {{"{_BLOB_KEY}": ...}} reference, but no out-of-band bytes came '
                "with this state (they only travel in a movement envelope)"
            )
        if type(index) is not int or not 0 <= index < len(blobs):
            raise InvalidStateError(
                f"{path}: {_BLOB_KEY} must be an integer index below {len(blobs)}, "
                f"got {_json_kind(index)} {index!r:.40}"
            )
        return tp(blobs[index])
    if not (isinstance(value, Mapping) and set(value) == {_BYTES_KEY}):
        raise _mismatch(path, f'{tp.__name__} (an object {{"{_BYTES_KEY}": base64}})', value)
    try:
        return tp(base64.b64decode(value[_BYTES_KEY], validate=True))
    except (TypeError, binascii.Error) as exc:
        raise InvalidStateError(f"{path}: invalid base64 for {tp.__name__}: {exc}") from exc


def _decode_string(tp: type, value: Any, path: str) -> Any:
    parse = _FROM_STRING.get(tp) or (tp if issubclass(tp, PurePath) else None)
    if parse is None:
        raise InvalidStateError(f"{path}: unsupported type hint {_name(tp)} ({_SUPPORTED})")
    if not isinstance(value, str):
        raise _mismatch(path, f"{_name(tp)} (a string)", value)
    try:
        return parse(value)
    except (ValueError, InvalidOperation) as exc:
        raise InvalidStateError(f"{path}: {value!r} is not a valid {_name(tp)}") from exc


def _mismatch(path: str, expected: str, value: Any) -> InvalidStateError:
    return InvalidStateError(f"{path}: expected {expected}, got {_json_kind(value)}")


def _json_kind(value: Any) -> str:
    kinds = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}
    kinds |= {Mapping: "object", type(None): "null"}
    return next((kind for cls, kind in kinds.items() if isinstance(value, cls)), _name(type(value)))


def _name(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if tp is type(None) or tp is None:
        return "None"
    if origin is Union or origin is types.UnionType:
        return " | ".join(_name(arg) for arg in args)
    if origin is Literal:
        return f"Literal[{', '.join(repr(arg) for arg in args)}]"
    if origin is not None:
        inner = ", ".join("..." if arg is Ellipsis else _name(arg) for arg in args)
        return f"{_name(origin)}[{inner}]"
    if isinstance(tp, type):
        return tp.__qualname__
    return repr(tp).removeprefix("typing.")
