"""The JSON projection of state and the restricted decoder back.

This module uses ``from __future__ import annotations``, so every state class
below has string annotations that the decoder must resolve.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum, IntEnum
from pathlib import Path, PurePosixPath
from typing import Any, Literal, NewType, Optional, Union

import pytest

from paglets.core.errors import InvalidStateError, RequestError
from paglets.core.state import PagletState
from paglets.wire.state_json import BLOB_MIN, state_from_json, state_to_json

UserId = NewType("UserId", str)


NIL_UUID = uuid.UUID(int=0)
HERE = PurePosixPath()


class Color(Enum):
    RED = "red"
    GREEN = "green"


class Level(IntEnum):
    LOW = 1
    HIGH = 2


class Shape(Enum):
    SQUARE = 4
    TRIANGLE = 3


@dataclass(frozen=True)
class Point:
    x: int
    y: int


@dataclass
class Event:
    name: str
    when: dt.datetime
    tags: set[str] = field(default_factory=set)


@dataclass
class Scalars(PagletState):
    i: int = 0
    f: float = 0.0
    s: str = ""
    b: bool = False
    n: None = None
    anything: Any = None
    user: UserId = UserId("")


@dataclass
class Collections(PagletState):
    ints: list[int] = field(default_factory=list)
    var_tuple: tuple[int, ...] = ()
    pair: tuple[str, int] = ("", 0)
    strings: set[str] = field(default_factory=set)
    frozen: frozenset[int] = frozenset()
    mapping: dict[str, list[int]] = field(default_factory=dict)
    bare_list: list = field(default_factory=list)  # type: ignore[type-arg]
    bare_dict: dict = field(default_factory=dict)  # type: ignore[type-arg]


@dataclass
class Values(PagletState):
    color: Color = Color.RED
    level: Level = Level.LOW
    shape: Shape = Shape.SQUARE
    mode: Literal["fast", "slow"] = "fast"
    lit_enum: Literal[Color.GREEN] = Color.GREEN
    when: dt.datetime = dt.datetime(2000, 1, 1)  # noqa: DTZ001
    day: dt.date = dt.date(2000, 1, 1)
    clock: dt.time = dt.time(0, 0)
    ident: uuid.UUID = NIL_UUID
    path: Path = Path()
    posix: PurePosixPath = HERE
    money: Decimal = Decimal(0)
    blob: bytes = b""
    buffer: bytearray = field(default_factory=bytearray)


@dataclass
class Nested(PagletState):
    origin: Point = Point(0, 0)
    points: list[Point] = field(default_factory=list)
    point_set: frozenset[Point] = frozenset()
    events: dict[str, Event] = field(default_factory=dict)
    maybe: Point | None = None
    maybe_old: Optional[Point] = None  # noqa: UP045 - the old spelling must work too
    either: Union[int, str] = 0  # noqa: UP007
    number_or_text: float | str = 0.0
    points_or_events: list[Point | Event] = field(default_factory=list)


@dataclass
class WithLate(PagletState):
    base: int = 1
    derived: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.derived = self.base * 10


@dataclass
class Required(PagletState):
    name: str
    count: int = 0
    items: list[str] = field(default_factory=list)


@dataclass
class Node(PagletState):
    children: list[Node] = field(default_factory=list)


@dataclass
class Validated(PagletState):
    size: int = 0

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError("size must not be negative")


@dataclass
class Unsupported(PagletState):
    period: dt.timedelta = dt.timedelta(0)


@dataclass
class IntKeys(PagletState):
    table: dict[int, str] = field(default_factory=dict)


@dataclass
class Holder(PagletState):
    items: list[Any] = field(default_factory=list)


@dataclass
class Slot:
    when: Any = None


UTC = dt.UTC
INDIA = dt.timezone(dt.timedelta(hours=5, minutes=30))

# A class built at runtime: real type objects as annotations, not strings.
Runtime = dataclasses.make_dataclass(
    "Runtime",
    [("count", int, field(default=0)), ("when", dt.date | None, field(default=None))],
    bases=(PagletState,),
)

ROUND_TRIPS: list[PagletState] = [
    Scalars(),
    Scalars(i=-7, f=2.5, s="héllo \u2603", b=True, anything={"a": [1, None, "x"]}),
    Scalars(f=3.0, user=UserId("u-1")),
    Scalars(f=math.inf, anything=[1.5, True]),
    Collections(),
    Collections(
        ints=[3, 1, 2],
        var_tuple=(5, 4),
        pair=("a", 1),
        strings={"b", "a", "c"},
        frozen=frozenset({10, 9, 1}),
        mapping={"x": [1], "": []},
        bare_list=[1, "two", None],
        bare_dict={"k": {"nested": True}},
    ),
    Values(),
    Values(
        color=Color.GREEN,
        level=Level.HIGH,
        shape=Shape.TRIANGLE,
        mode="slow",
        when=dt.datetime(2024, 2, 29, 13, 45, 1, 123456, tzinfo=UTC),
        day=dt.date(1999, 12, 31),
        clock=dt.time(23, 59, 58, 1),
        ident=uuid.UUID("12345678-1234-5678-1234-567812345678"),
        path=Path("/tmp/some dir/file.txt"),
        posix=PurePosixPath("relative/x"),
        money=Decimal("1234.5600"),
        blob=bytes(range(256)),
        buffer=bytearray(b"\x00\xff"),
    ),
    Values(when=dt.datetime(2024, 1, 1, 9, 0, tzinfo=INDIA), clock=dt.time(9, 30, tzinfo=INDIA)),
    Values(money=Decimal("-0.000001"), blob=b"x"),
    Nested(),
    Nested(
        origin=Point(1, -1),
        points=[Point(1, 2), Point(3, 4)],
        point_set=frozenset({Point(2, 2), Point(1, 9)}),
        events={"e": Event("launch", dt.datetime(2030, 5, 6, tzinfo=UTC), {"t2", "t1"})},
        maybe=Point(5, 5),
        maybe_old=Point(6, 6),
        either="text",
        number_or_text="3.5",
        points_or_events=[Point(0, 1), Event("x", dt.datetime(2001, 1, 1))],  # noqa: DTZ001
    ),
    Nested(either=42, number_or_text=4.25),
    WithLate(base=3),
    Required(name="n", count=2, items=["a"]),
    Node(children=[Node(), Node(children=[Node()])]),
    Runtime(count=3, when=dt.date(2020, 2, 2)),
    Runtime(),
]


def _through_json(state: PagletState) -> Any:
    return json.loads(json.dumps(state_to_json(state), allow_nan=True))


@pytest.mark.parametrize("state", ROUND_TRIPS, ids=lambda s: type(s).__name__)
def test_round_trip_through_json_text(state: PagletState) -> None:
    rebuilt = state_from_json(type(state), _through_json(state))
    assert rebuilt == state
    assert type(rebuilt) is type(state)


@pytest.mark.parametrize("state", ROUND_TRIPS, ids=lambda s: type(s).__name__)
def test_projection_holds_only_json_types(state: PagletState) -> None:
    def check(value: Any) -> None:
        if isinstance(value, dict):
            assert all(isinstance(key, str) for key in value)
            for item in value.values():
                check(item)
        elif isinstance(value, list):
            for item in value:
                check(item)
        else:
            assert type(value) in (str, int, float, bool, type(None)), value

    data = state_to_json(state)
    check(data)
    assert _through_json(state) == data


def test_projection_of_values() -> None:
    state = Values(
        color=Color.GREEN,
        level=Level.HIGH,
        when=dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        money=Decimal("1.10"),
        blob=b"hi",
        path=Path("a/b"),
    )
    data = state_to_json(state)
    assert data["color"] == "green"
    assert data["level"] == 2
    assert type(data["level"]) is int
    assert data["when"] == "2024-01-02T03:04:05+00:00"
    assert data["day"] == "2000-01-01"
    assert data["money"] == "1.10"
    assert data["blob"] == {"$bytes": "aGk="}
    assert data["path"] == "a/b"
    assert data["lit_enum"] == "green"


def test_sets_are_sorted_for_stable_output() -> None:
    data = state_to_json(Collections(strings={"b", "c", "a"}, frozen=frozenset({3, 1, 2})))
    assert data["strings"] == ["a", "b", "c"]
    assert data["frozen"] == [1, 2, 3]
    points = state_to_json(Nested(point_set=frozenset({Point(2, 1), Point(1, 2)})))["point_set"]
    again = state_to_json(Nested(point_set=frozenset({Point(1, 2), Point(2, 1)})))["point_set"]
    assert points == again


def test_mixed_set_in_any_field_has_a_stable_order() -> None:
    one = state_to_json(Scalars(anything={1, "a", None}))["anything"]
    assert sorted(one, key=repr) == sorted([1, "a", None], key=repr)
    assert one == state_to_json(Scalars(anything={None, "a", 1}))["anything"]


@dataclass
class Plain(PagletState):
    ints: list[int] = field(default_factory=list)
    floats: list[float] = field(default_factory=list)
    flags: tuple[bool, ...] = ()
    names: set[str] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)
    anything: list[Any] = field(default_factory=list)


def test_containers_of_plain_items_decode_to_their_exact_types() -> None:
    data = {
        "ints": [3, 1],
        "floats": [1, 2.5],
        "flags": [True, False],
        "names": ["b", "a"],
        "counts": {"a": 1},
        "anything": [{"k": [1]}, None],
    }
    state = state_from_json(Plain, data)
    assert state == Plain([3, 1], [1.0, 2.5], (True, False), {"a", "b"}, {"a": 1}, data["anything"])
    assert [type(x) for x in state.floats] == [float, float]
    assert state.ints is not data["ints"]  # the state's own containers, not the data's
    assert state.counts is not data["counts"]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"ints": [1, 2, True]}, r"state\.ints\[2\]: expected int, got boolean"),
        ({"ints": [1, 2.0]}, r"state\.ints\[1\]: expected int, got number"),
        ({"floats": [1.5, "2"]}, r"state\.floats\[1\]: expected float, got string"),
        ({"flags": [True, 1]}, r"state\.flags\[1\]: expected bool, got integer"),
        ({"names": ["a", None]}, r"state\.names\[1\]: expected str, got null"),
        ({"counts": {"a": 1, "b": False}}, r"state\.counts\['b'\]: expected int, got boolean"),
    ],
)
def test_a_plain_item_that_does_not_fit_is_named(data: dict[str, Any], expected: str) -> None:
    with pytest.raises(InvalidStateError, match=expected):
        state_from_json(Plain, data)


def test_containers_of_plain_items_encode_as_copies_and_enums_as_values() -> None:
    state = Plain(ints=[1, Level.HIGH], counts={"a": 1, "b": Level.LOW}, names={"b", "a"})
    data = state_to_json(state)
    assert data["ints"] == [1, 2]
    assert [type(x) for x in data["ints"]] == [int, int]
    assert data["counts"] == {"a": 1, "b": 1}
    assert type(data["counts"]["b"]) is int
    assert data["names"] == ["a", "b"]
    plain = Plain(ints=[1, 2], counts={"a": 1})
    again = state_to_json(plain)
    assert again["ints"] == [1, 2]
    assert again["ints"] is not plain.ints  # the projection never shares the state's lists
    assert again["counts"] is not plain.counts


def test_missing_fields_take_defaults() -> None:
    assert state_from_json(Required, {"name": "x"}) == Required(name="x")
    assert state_from_json(Values, {}) == Values()
    assert state_from_json(WithLate, {"base": 2}).derived == 20


def test_init_false_field_is_restored() -> None:
    state = WithLate(base=1)
    state.derived = 99
    assert state_from_json(WithLate, state_to_json(state)).derived == 99


def test_float_accepts_int_and_int_rejects_bool() -> None:
    rebuilt = state_from_json(Scalars, {"f": 2})
    assert rebuilt.f == 2.0
    assert type(rebuilt.f) is float
    with pytest.raises(InvalidStateError, match=r"state\.i: expected int, got boolean"):
        state_from_json(Scalars, {"i": True})
    with pytest.raises(InvalidStateError, match=r"state\.f: expected float, got boolean"):
        state_from_json(Scalars, {"f": False})
    with pytest.raises(InvalidStateError, match=r"state\.b: expected bool, got integer"):
        state_from_json(Scalars, {"b": 1})


def test_union_members_are_tried_in_order() -> None:
    assert state_from_json(Nested, {"either": 5}).either == 5
    assert state_from_json(Nested, {"either": "5"}).either == "5"
    assert state_from_json(Nested, {"number_or_text": 5}).number_or_text == 5.0
    with pytest.raises(InvalidStateError, match=r"state\.either: expected int \| str, got array"):
        state_from_json(Nested, {"either": []})


def test_optional_reports_the_inner_error() -> None:
    with pytest.raises(InvalidStateError, match=r"state\.maybe\.y: expected int, got string"):
        state_from_json(Nested, {"maybe": {"x": 1, "y": "2"}})


def test_any_keeps_decoded_json() -> None:
    data = {"anything": {"$bytes": "aGk=", "list": [1, 2]}}
    assert state_from_json(Scalars, data).anything == data["anything"]


def test_encode_error_names_the_path_and_type() -> None:
    state = Holder(items=[1, 2, Slot(when=dt.timedelta(seconds=1))])
    with pytest.raises(InvalidStateError) as info:
        state_to_json(state)
    message = str(info.value)
    assert "state.items[2].when" in message
    assert "timedelta" in message
    assert "supported:" in message
    assert "datetime" in message


def test_encode_rejects_non_str_dict_keys() -> None:
    with pytest.raises(InvalidStateError, match=r"state\.table: dict key 1 is a int"):
        state_to_json(IntKeys(table={1: "one"}))
    with pytest.raises(InvalidStateError, match=r"state\.items\[0\]: dict key 0 is a int"):
        state_to_json(Holder(items=[{0: "zero"}]))


def test_encode_rejects_non_dataclass_and_cycles() -> None:
    with pytest.raises(InvalidStateError, match="must be a dataclass instance, not dict"):
        state_to_json({"a": 1})  # type: ignore[arg-type]
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(InvalidStateError, match="nested too deeply"):
        state_to_json(Holder(items=loop))


def test_encode_error_is_a_request_error() -> None:
    with pytest.raises(RequestError):
        state_to_json(Holder(items=[object()]))


@pytest.mark.parametrize(
    ("cls", "data", "expected"),
    [
        (Required, {"name": "a", "colour": 1}, r"state: unknown field 'colour' for Required"),
        (
            Nested,
            {"origin": {"x": 1, "y": 2, "z": 3}},
            r"state\.origin: unknown field 'z' for Point",
        ),
        (Required, {"count": 1}, r"state: missing required field 'name' of Required"),
        (Nested, {"origin": {"x": 1}}, r"state\.origin: missing required field 'y' of Point"),
        (Required, {"name": 5}, r"state\.name: expected str, got integer"),
        (
            Required,
            {"name": "a", "items": "abc"},
            r"state\.items: expected list\[str\], got string",
        ),
        (
            Required,
            {"name": "a", "items": ["a", 2]},
            r"state\.items\[1\]: expected str, got integer",
        ),
        (
            Nested,
            {"points": [{"x": 1, "y": 2}, {"x": 1, "y": None}]},
            r"points\[1\]\.y: expected int, got null",
        ),
        (
            Nested,
            {"events": {"e": {"name": "n", "when": "soon"}}},
            r"state\.events\['e'\]\.when: 'soon' is not a valid datetime",
        ),
        (Nested, {"origin": [1, 2]}, r"state\.origin: expected Point \(an object\), got array"),
        (
            Collections,
            {"pair": ["a"]},
            r"state\.pair: expected tuple\[str, int\], got an array of 1",
        ),
        (Collections, {"pair": [1, 1]}, r"state\.pair\[0\]: expected str, got integer"),
        (
            Collections,
            {"mapping": {"a": {}}},
            r"state\.mapping\['a'\]: expected list\[int\], got object",
        ),
        (Collections, {"strings": {"a": 1}}, r"state\.strings: expected set\[str\], got object"),
        (
            Values,
            {"color": "blue"},
            r"state\.color: expected Color \(one of \['red', 'green'\]\), got string",
        ),
        (Values, {"level": True}, r"state\.level: expected Level"),
        (
            Values,
            {"mode": "medium"},
            r"state\.mode: expected Literal\['fast', 'slow'\], got string",
        ),
        (
            Values,
            {"day": "2024-01-01T10:00"},
            r"state\.day: '2024-01-01T10:00' is not a valid date",
        ),
        (Values, {"day": 20240101}, r"state\.day: expected date \(a string\), got integer"),
        (Values, {"ident": "not-a-uuid"}, r"state\.ident: 'not-a-uuid' is not a valid UUID"),
        (Values, {"money": "lots"}, r"state\.money: 'lots' is not a valid Decimal"),
        (
            Values,
            {"blob": "aGk="},
            r"state\.blob: expected bytes \(an object \{\"\$bytes\": base64\}\), got string",
        ),
        (Values, {"blob": {"$bytes": "a!b"}}, r"state\.blob: invalid base64 for bytes"),
        (Values, {"blob": {"$bytes": "aGk=", "x": 1}}, r"state\.blob: expected bytes"),
        (Scalars, {"n": 0}, r"state\.n: expected None, got integer"),
        (Validated, {"size": -1}, r"state: Validated rejected the data: size must not be negative"),
        (Unsupported, {"period": 5}, r"state\.period: unsupported type hint timedelta"),
        (
            IntKeys,
            {"table": {}},
            r"state\.table: unsupported type hint dict\[int, str\]; keys must be str",
        ),
    ],
)
def test_decode_errors(cls: type[PagletState], data: dict[str, Any], expected: str) -> None:
    with pytest.raises(InvalidStateError, match=expected):
        state_from_json(cls, data)


def test_decode_rejects_non_object_and_non_dataclass() -> None:
    with pytest.raises(
        InvalidStateError, match=r"state: expected Required \(an object\), got array"
    ):
        state_from_json(Required, [])  # type: ignore[arg-type]
    with pytest.raises(InvalidStateError, match="must be a dataclass"):
        state_from_json(dict, {})  # type: ignore[type-var]


def test_decoder_never_resolves_names_from_the_data() -> None:
    # A forged payload naming a global is only ever data: an unknown key, or a string.
    with pytest.raises(InvalidStateError, match="unknown field '__class__'"):
        state_from_json(Scalars, {"__class__": "os:system"})
    with pytest.raises(InvalidStateError, match=r"state\.origin: unknown field '\$type'"):
        state_from_json(Nested, {"origin": {"$type": "os.system", "x": 1, "y": 2}})
    assert state_from_json(Scalars, {"anything": "os:system"}).anything == "os:system"


def test_deep_data_fails_cleanly() -> None:
    data: dict[str, Any] = {}
    for _ in range(5000):
        data = {"children": [data]}
    with pytest.raises(InvalidStateError, match="nested too deeply"):
        state_from_json(Node, data)


def test_unresolvable_hints_are_an_invalid_state_error() -> None:
    @dataclass
    class Local(PagletState):
        other: NotDefinedAnywhere  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(InvalidStateError, match=r"cannot resolve the type hints of .*Local"):
        state_from_json(Local, {})


# -- out-of-band bytes ("$blob") ------------------------------------------------------


@dataclass
class Blobs(PagletState):
    big: bytes = b""
    buffer: bytearray = field(default_factory=bytearray)
    many: list[bytes] = field(default_factory=list)
    named: dict[str, bytes] = field(default_factory=dict)
    maybe: bytes | None = None
    label: str = ""
    anything: Any = None


def test_large_bytes_go_out_of_band_without_a_copy() -> None:
    big, buffer = b"x" * BLOB_MIN, bytearray(b"y" * 5000)
    state = Blobs(big=big, buffer=buffer, many=[b"s", b"z" * 2000], named={"k": b"w" * 3000})
    blobs: list[memoryview] = []
    data = state_to_json(state, blobs)
    assert data["big"] == {"$blob": 0}
    assert data["buffer"] == {"$blob": 1}
    assert data["many"] == [{"$bytes": "cw=="}, {"$blob": 2}]
    assert data["named"] == {"k": {"$blob": 3}}
    assert [b.nbytes for b in blobs] == [BLOB_MIN, 5000, 2000, 3000]
    assert blobs[0].obj is big
    assert blobs[1].obj is buffer
    json.dumps(data)  # still plain JSON
    assert state_from_json(Blobs, data, blobs) == state


def test_bytes_below_the_threshold_stay_inline() -> None:
    blobs: list[memoryview] = []
    data = state_to_json(Blobs(big=b"x" * (BLOB_MIN - 1)), blobs)
    assert blobs == []
    assert set(data["big"]) == {"$bytes"}


def test_without_a_blob_list_everything_is_base64() -> None:
    data = state_to_json(Blobs(big=b"x" * 5000))
    assert set(data["big"]) == {"$bytes"}
    assert state_from_json(Blobs, data).big == b"x" * 5000


def test_blobs_decode_to_the_hinted_type_as_copies() -> None:
    source = bytearray(b"q" * 2000)
    blobs = [memoryview(source)]
    state = state_from_json(
        Blobs, {"big": {"$blob": 0}, "buffer": {"$blob": 0}, "maybe": {"$blob": 0}}, blobs
    )
    assert type(state.big) is bytes
    assert type(state.buffer) is bytearray
    assert state.maybe == bytes(source)
    source[0] = ord("r")  # the decoded values do not share memory with the blob
    assert state.big[0] == ord("q")
    assert state.buffer[0] == ord("q")


@pytest.mark.parametrize(
    ("data", "blobs", "expected"),
    [
        ({"label": {"$blob": 0}}, [b"x"], r"state\.label: expected str, got object"),
        ({"big": {"$blob": 1}}, [b"x"], r"state\.big: \$blob must be an integer index below 1"),
        ({"big": {"$blob": -1}}, [b"x"], r"state\.big: \$blob must be .* got integer -1"),
        ({"big": {"$blob": True}}, [b"x", b"y"], r"state\.big: \$blob must be .* got boolean True"),
        ({"big": {"$blob": 0.0}}, [b"x"], r"state\.big: \$blob must be .* got number"),
        ({"big": {"$blob": "0"}}, [b"x"], r"state\.big: \$blob must be .* got string"),
        ({"big": {"$blob": 0}}, None, r"state\.big: a \{\"\$blob\": \.\.\.\} reference, but no"),
        ({"many": [{"$blob": 0}]}, [], r"state\.many\[0\]: \$blob must be .* below 0"),
        ({"big": {"$blob": 0, "x": 1}}, [b"x"], r"state\.big: expected bytes"),
    ],
)
def test_bad_blob_references(
    data: dict[str, Any], blobs: list[bytes] | None, expected: str
) -> None:
    with pytest.raises(InvalidStateError, match=expected):
        state_from_json(Blobs, data, blobs)


def test_blob_reference_in_an_any_field_stays_data() -> None:
    # Any keeps decoded JSON as is: the reference is never resolved there.
    state = state_from_json(Blobs, {"anything": {"$blob": 0}}, [b"secret"])
    assert state.anything == {"$blob": 0}
