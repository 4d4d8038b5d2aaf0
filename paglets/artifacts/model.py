"""``ArtifactInfo``, and the one place artifact names and checksums are checked."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Final

from paglets.core.errors import ProtocolError, RequestError
from paglets.core.ids import IdKind, check_id

SHA256: Final = re.compile(r"[0-9a-f]{64}")


def check_name(value: object) -> str:
    """``value`` if it is an artifact name: 1 to 200 of ``A-Z a-z 0-9 . _ -``, starting
    with a letter or a digit (no ``/``: one flat namespace per host).

    Raises:
        RequestError: anything else; the message says what is allowed.
    """
    return check_id(value, IdKind.ARTIFACT)


def check_sha256(value: object) -> str:
    """``value`` if it is a sha256 in lower-case hex; `RequestError` otherwise."""
    if not isinstance(value, str) or SHA256.fullmatch(value) is None:
        raise RequestError(
            f"sha256 {value!r:.80} is not 64 lower-case hex digits; send the file's "
            "sha256 (sha256sum prints it)"
        )
    return value


@dataclass(frozen=True, slots=True)
class ArtifactInfo:
    """One artifact as a host lists it.

    Attributes:
        name: its name on its host.
        size: its length in bytes.
        sha256: the sha256 of its bytes, hex.
        created: when it was stored (Unix time).
        host: the name of the host that keeps it.
    """

    name: str
    size: int
    sha256: str
    created: float
    host: str

    def to_dict(self) -> dict[str, Any]:
        """Its JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> ArtifactInfo:
        """Decode an artifact's record strictly.

        Raises:
            ProtocolError: a missing, extra or badly typed field.
        """
        try:
            if not isinstance(data, dict) or data.keys() != set(cls.__slots__):
                raise TypeError("wrong fields")  # noqa: TRY301
            size, created = data["size"], data["created"]
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise TypeError("size")  # noqa: TRY301
            if isinstance(created, bool) or not isinstance(created, int | float):
                raise TypeError("created")  # noqa: TRY301
            return cls(
                name=check_name(data["name"]),
                size=size,
                sha256=check_sha256(data["sha256"]),
                created=float(created),
                host=check_id(data["host"], IdKind.HOST),
            )
        except (TypeError, RequestError) as exc:
            raise ProtocolError(f"malformed artifact record: {exc} in {data!r:.200}") from None
