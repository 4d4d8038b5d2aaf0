"""``Record``: a strict, fast JSON codec for flat control-record dataclasses.

A record is a dataclass whose fields are JSON scalars, optional scalars,
``list[str]``, ``dict[str, Any]`` or ``Any``. ``parse`` checks every field's
type, refuses unknown fields and names what is wrong; ``to_dict`` is a plain
field copy. The schema of each class is worked out once, from its type hints.

dataclasses-json was measured at 130-480 µs a record here (it resolves its
configuration on every call), which is most of a create's HTTP overhead; these
records cost a few µs.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, ClassVar, Self, Union

from paglets.core.errors import RequestError

_Check = typing.Callable[[Any], bool]


def _checker(hint: Any) -> tuple[_Check, str]:  # noqa: PLR0911 - one branch per JSON type
    """A predicate for values of ``hint`` and a word for the error message."""
    if hint is Any:
        return (lambda _v: True), "any JSON value"
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        parts = [_checker(h) for h in typing.get_args(hint)]
        return (lambda v: any(check(v) for check, _ in parts)), " or ".join(w for _, w in parts)
    if hint is type(None):
        return (lambda v: v is None), "null"
    if hint is bool:
        return (lambda v: isinstance(v, bool)), "a boolean"
    if hint is int:
        return (lambda v: isinstance(v, int) and not isinstance(v, bool)), "an integer"
    if hint is float:
        return (lambda v: isinstance(v, int | float) and not isinstance(v, bool)), "a number"
    if hint is str:
        return (lambda v: isinstance(v, str)), "a string"
    if origin is list:
        (item,) = typing.get_args(hint)
        check, word = _checker(item)
        return (lambda v: isinstance(v, list) and all(check(i) for i in v)), f"a list of {word}"
    if origin is dict:
        _key, value = typing.get_args(hint)
        check, word = _checker(value)
        return (
            lambda v: (
                isinstance(v, dict) and all(isinstance(k, str) and check(i) for k, i in v.items())
            )
        ), "an object"
    raise TypeError(f"record fields cannot be of type {hint!r}")


class Record:
    """Base of the control records; subclasses are ``@dataclass``."""

    _schema: ClassVar[dict[str, tuple[_Check, str, bool]]]

    @classmethod
    def _get_schema(cls) -> dict[str, tuple[_Check, str, bool]]:
        schema = cls.__dict__.get("_schema")
        if schema is None:
            hints = typing.get_type_hints(cls)
            schema = {}
            for f in dataclasses.fields(cls):  # type: ignore[arg-type]
                required = (
                    f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                )
                check, word = _checker(hints[f.name])
                schema[f.name] = (check, word, required)
            cls._schema = schema
        return schema

    def __getitem__(self, key: str) -> Any:
        """Mapping-style access to fields (``info["status"]``)."""
        if key not in self._get_schema():
            raise KeyError(key)
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object for this record."""
        return {name: getattr(self, name) for name in self._get_schema()}

    @classmethod
    def parse(cls, data: Any) -> Self:
        """Decode ``data``; a `RequestError` naming the first problem otherwise."""
        name = cls.__name__
        if not isinstance(data, dict):
            raise RequestError(f"{name} must be a JSON object")
        schema = cls._get_schema()
        unknown = data.keys() - schema.keys()
        if unknown:
            raise RequestError(f"unknown fields in {name}: {sorted(unknown)}")
        for field_name, (check, word, required) in schema.items():
            if field_name not in data:
                if required:
                    raise RequestError(f"{name} needs the field {field_name!r}")
            elif not check(data[field_name]):
                raise RequestError(f"{name}.{field_name} must be {word}")
        return cls(**data)
