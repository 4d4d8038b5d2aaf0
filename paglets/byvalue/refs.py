"""The by-value class path: ``module:Qual.Name@<sha256 of the code>``.

A paglet whose class travels by value is named everywhere a class path goes
(requests, records, envelope headers, the store) by its class path with the
SHA-256 of its pickled code appended after an ``@``. Every layer that only
carries a class path carries this one unchanged; the layers that turn a class
path into a class (the host's admission, the child's loading) look for the
``@`` with `parse_code_ref`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final, Self

from paglets.core.errors import PayloadTooLargeError, RequestError
from paglets.wire.modules import parse_class_path

__all__ = [
    "CODE_MARK",
    "MAX_CODE",
    "CodeRef",
    "check_code",
    "check_sha256",
    "code_hash",
    "parse_code_ref",
]

CODE_MARK: Final = "@"
MAX_CODE: Final = 16 << 20
"""The most bytes one class's pickled code may have."""

_SHA256: Final = re.compile(r"[0-9a-f]{64}")


def code_hash(code: bytes) -> str:
    """The SHA-256 of ``code``, 64 lowercase hex digits."""
    return hashlib.sha256(code).hexdigest()


def check_sha256(value: str) -> str:
    """``value`` if it is 64 lowercase hex digits; else a `RequestError` that says so."""
    if not _SHA256.fullmatch(value):
        raise RequestError(
            f"code hash {value[:80]!r} is not a SHA-256: expected 64 lowercase hex digits"
        )
    return value


@dataclass(frozen=True, slots=True)
class CodeRef:
    """A class that travels by value: its module and name, and the hash of its code."""

    module: str
    qualname: str
    sha256: str

    @property
    def class_path(self) -> str:
        """``module:Qual.Name``, as the class names itself."""
        return f"{self.module}:{self.qualname}"

    @property
    def path(self) -> str:
        """The by-value class path: ``module:Qual.Name@sha256``."""
        return f"{self.class_path}{CODE_MARK}{self.sha256}"

    @classmethod
    def of(cls, class_path: str, code: bytes) -> Self:
        """The reference to ``code``, a class that names itself ``class_path``."""
        module, qualname = parse_class_path(class_path)
        return cls(module, qualname, code_hash(code))

    def check(self, code: bytes) -> bytes:
        """``code`` if it is this reference's code (size and hash); else a `RequestError`."""
        return check_code(code, self.sha256, f"the code of {self.class_path}")


def check_code(code: bytes, sha256: str, what: str) -> bytes:
    """``code`` if it is within `MAX_CODE` and hashes to ``sha256``.

    Raises:
        PayloadTooLargeError: over `MAX_CODE`.
        RequestError: another hash; the message names ``what``.
    """
    if len(code) > MAX_CODE:
        raise PayloadTooLargeError(f"{what} is {len(code)} bytes; the limit is {MAX_CODE}")
    got = code_hash(code)
    if got != sha256:
        raise RequestError(f"{what} has SHA-256 {got}, not {sha256}")
    return code


def parse_code_ref(class_path: str) -> CodeRef | None:
    """The `CodeRef` of a by-value class path; ``None`` for a plain ``module:Class`` one.

    Raises:
        RequestError: it has an ``@`` but is not ``module:Class@<64 hex digits>``.
    """
    if CODE_MARK not in class_path:
        return None
    named, _, sha = class_path.rpartition(CODE_MARK)
    module, qualname = parse_class_path(named)
    return CodeRef(module, qualname, check_sha256(sha))
