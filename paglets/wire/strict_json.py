"""Strict JSON from outside: finite numbers, bounded nesting, well-formed text.

Python's `json` accepts more than JSON: ``NaN`` and ``Infinity``, numbers such
as ``1e400`` that become ``inf``, strings holding a lone UTF-16 surrogate
(``"\\ud800"``, which no UTF-8 encoder can write back), and nesting deep enough
to raise `RecursionError`. `loads` refuses each with a `RequestError` that says
what was wrong, so a malformed body is a 400 before it has any effect; `dumps`
writes strict JSON only (``allow_nan=False``).

Nesting is checked on the raw text's brackets (`_deeper_than`); strings are
checked by walking the decoded value, only when the raw text holds a
``\\ud8..``-``\\udf..`` escape.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Final, NoReturn

from paglets.core.errors import RequestError

MAX_DEPTH: Final = 64
"""The deepest nesting of arrays and objects accepted in a body."""

_SURROGATE_ESCAPE: Final = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_STRING: Final = re.compile(rb'"[^"]*"')
_ALL_BUT_BRACKETS_AND_QUOTES: Final = bytes(sorted(set(range(256)) - set(b'[]{}"')))
_INNERMOST: Final = re.compile(rb"\[\]|\{\}")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        shown = text if len(text) <= 40 else text[:40] + "…"  # noqa: PLR2004 - shown length
        raise RequestError(f"the JSON number {shown} is out of range; numbers must be finite")
    return value


def _no_constant(name: str) -> NoReturn:
    raise RequestError(f"{name} is not a JSON number; numbers must be finite")


_decode: Final = json.JSONDecoder(parse_float=_finite, parse_constant=_no_constant).decode


def loads(data: bytes | str, what: str = "JSON body") -> Any:
    """Decode ``data`` as strict JSON; `RequestError` naming ``what`` otherwise.

    Raises:
        RequestError: malformed JSON, a non-finite number, nesting deeper than
            `MAX_DEPTH`, or a string with a lone surrogate.
    """
    try:
        text = data if isinstance(data, str) else data.decode(json.detect_encoding(data))
        value = _decode(text)
    except RequestError as exc:
        raise RequestError(f"malformed {what}: {exc.message}") from None
    except RecursionError:
        raise RequestError(
            f"malformed {what}: arrays and objects nested more than {MAX_DEPTH} deep"
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(f"malformed {what}: {exc}") from None
    # a lone surrogate in a str shows as its "\\udxxx" escape here
    raw = data.encode("utf-8", "backslashreplace") if isinstance(data, str) else data
    if _SURROGATE_ESCAPE.search(raw):
        _check_tree(value, what)
    elif _deeper_than(raw, MAX_DEPTH):
        raise RequestError(
            f"malformed {what}: arrays and objects nested more than {MAX_DEPTH} deep"
        )
    return value


def _deeper_than(raw: bytes, limit: int) -> bool:
    """Whether the well-formed JSON text ``raw`` nests arrays and objects more than
    ``limit`` deep, found without walking the decoded value.

    The text's brackets, strings taken out, lose their innermost pairs at each pass
    of one regular expression; nesting of at most ``limit`` leaves nothing after
    ``limit`` passes. A body of many small calls (a channel frame) costs a few passes.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    if b"\\" in raw:  # escapes out ("\\\\" first), so every quote left opens or closes a string
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    skeleton = raw.translate(None, _ALL_BUT_BRACKETS_AND_QUOTES).replace(b'""', b"")
    if b'"' in skeleton:  # ("" went first: an empty string, or two strings side by side)
        skeleton = _STRING.sub(b"", skeleton)
    for _ in range(limit):
        skeleton, removed = _INNERMOST.subn(b"", skeleton)
        if not skeleton or not removed:
            break
    return bool(skeleton)


def _check_tree(value: Any, what: str) -> None:
    """Walk ``value`` (without recursion): bounded depth, no lone surrogates."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            _check_text(node, what)
            continue
        if not isinstance(node, dict | list):
            continue
        if depth >= MAX_DEPTH:
            raise RequestError(
                f"malformed {what}: arrays and objects nested more than {MAX_DEPTH} deep"
            )
        if isinstance(node, dict):
            for key, item in node.items():
                _check_text(key, what)
                stack.append((item, depth + 1))
        else:
            stack.extend((item, depth + 1) for item in node)


def _check_text(text: str, what: str) -> None:
    if not text.isascii() and _SURROGATE.search(text):
        raise RequestError(
            f"malformed {what}: a string holds a lone UTF-16 surrogate (an unpaired "
            "\\ud800-\\udfff escape); send well-formed Unicode text"
        )


_dumps: Final = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def dumps(value: Any) -> str:
    """Compact strict JSON (ASCII); ``ValueError`` for NaN or infinity, ``TypeError``
    for a value JSON cannot hold."""
    return _dumps(value)
