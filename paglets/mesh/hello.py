"""The mesh hello: a peer proves it holds the mesh key before this host sends it.

A host sends its bearer key to a URL, and merges what that URL answers, only
once the host there has proven that it holds the key. Until then the URL (a
zeroconf announcement, a ``--peer``, a URL from a record) gets one request
without the key::

    A → B   POST /v1/mesh/hello   {"name": A, "url": U, "nonce": nA}     (no key)
    B → A   200                   {"name": B, "nonce": nB, "proof": P}

``U`` is the URL A dialed, ``nA`` and ``nB`` are 32 random bytes (hex) and::

    P = HMAC-SHA256(K, "paglets-mesh-hello-v1" 0 "responder" 0 nA 0 nB 0 A 0 B 0 U)
    K = HMAC-SHA256(api_key, "paglets mesh hello key v1")

A checks ``P`` in constant time. Only then does it POST its gossip to ``U``
with the bearer key, which proves A to B in turn: the exchange is mutual, and
neither side ever sends the key to a party that has not proven it holds it.
A host without a key answers a hello with 400; a host with a key never
gossips with it.

Why each part is there:

- ``nA`` (fresh each time) makes an old answer useless; ``nB`` makes B's
  answer depend on B's own randomness, so B is no oracle that returns the MAC
  of a message the caller chose; ``responder`` names the direction, so a proof
  made by B can never be passed off as a proof made by A.
- ``U`` stops a relay: a stranger who announces its own URL and forwards A's
  hello to a real host B would pass B's proof back to A and then receive A's
  key. B answers only a hello for a URL that is its own: one it publishes
  (``url`` and ``urls`` of its record, which covers ``--public-url`` behind a
  proxy), or one whose literal IP address and port are the very socket the
  hello arrived on. A hello relayed from elsewhere names the relay's URL and is
  refused, and A's MAC would not match any other URL.

What this does not do: plain ``http`` carries the key in clear to a proven
peer, so anyone who can read the traffic learns it. On a network you do not
trust, serve the mesh over TLS.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from paglets.core.errors import ProtocolError, RequestError
from paglets.core.ids import IdKind, check_id
from paglets.wire.mesh import check_url
from paglets.wire.records import API_PREFIX

HELLO_PATH: Final = f"{API_PREFIX}/mesh/hello"
HELLO_MAX_BYTES: Final = 2048
NONCE_BYTES: Final = 32
_HEX: Final = re.compile(r"[0-9a-f]{64}")
_LABEL: Final = b"paglets-mesh-hello-v1"
_KEY_LABEL: Final = b"paglets mesh hello key v1"


def hello_key(api_key: str) -> bytes:
    """The MAC key of hellos, derived from the mesh's API key."""
    return hmac.new(api_key.encode(), _KEY_LABEL, hashlib.sha256).digest()


def new_nonce() -> str:
    """32 random bytes, in hex."""
    return secrets.token_hex(NONCE_BYTES)


@dataclass(frozen=True, slots=True)
class Hello:
    """What the host that wants to talk sends, without its key.

    Attributes:
        name: its host name.
        url: the URL it dialed.
        nonce: its challenge.
    """

    name: str
    url: str
    nonce: str

    def to_dict(self) -> dict[str, str]:
        """The JSON form."""
        return {"name": self.name, "url": self.url, "nonce": self.nonce}

    @classmethod
    def from_dict(cls, data: Any) -> Hello:
        """Decode, checking every field; `RequestError` says what is wrong."""
        fields = _fields(data, "a hello", ("name", "url", "nonce"))
        try:
            check_url(fields["url"], "hello 'url'")
        except ProtocolError as exc:
            raise RequestError(str(exc)) from None
        return cls(check_id(fields["name"], IdKind.HOST), fields["url"], _nonce(fields["nonce"]))


@dataclass(frozen=True, slots=True)
class HelloReply:
    """The answer of a host that holds the key.

    Attributes:
        name: its host name.
        nonce: its own randomness, mixed into the proof.
        proof: the MAC (hex) described in the module docstring.
    """

    name: str
    nonce: str
    proof: str

    def to_dict(self) -> dict[str, str]:
        """The JSON form."""
        return {"name": self.name, "nonce": self.nonce, "proof": self.proof}

    @classmethod
    def from_dict(cls, data: Any) -> HelloReply:
        """Decode, checking every field; `RequestError` says what is wrong."""
        fields = _fields(data, "a hello reply", ("name", "nonce", "proof"))
        return cls(
            check_id(fields["name"], IdKind.HOST),
            _nonce(fields["nonce"]),
            _nonce(fields["proof"], "proof"),
        )


def _fields(data: Any, what: str, names: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(data, dict) or set(data) != set(names):
        raise RequestError(f"{what} is a JSON object with exactly {', '.join(names)}")
    return data


def _nonce(value: Any, what: str = "nonce") -> str:
    if not isinstance(value, str) or _HEX.fullmatch(value) is None:
        raise RequestError(f"a hello {what} is 64 lowercase hex digits")
    return value


def proof(key: bytes, hello: Hello, name: str, nonce: str) -> str:
    """The responder's proof for ``hello``, as host ``name`` with its ``nonce``."""
    message = b"\0".join(
        [
            _LABEL,
            b"responder",
            bytes.fromhex(hello.nonce),
            bytes.fromhex(nonce),
            hello.name.encode(),
            name.encode(),
            hello.url.encode(),
        ]
    )
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def answer(key: bytes, hello: Hello, name: str) -> HelloReply:
    """What host ``name`` answers to ``hello``."""
    nonce = new_nonce()
    return HelloReply(name, nonce, proof(key, hello, name, nonce))


def is_proven(key: bytes, hello: Hello, reply: HelloReply) -> bool:
    """Whether ``reply`` proves that its sender holds the key, in constant time."""
    expected = proof(key, hello, reply.name, reply.nonce)
    return hmac.compare_digest(expected, reply.proof)


def dialed_me(url: str, published: list[str], sockname: Any) -> bool:
    """Whether ``url``, as a peer dialed it, reaches this host and not a relay.

    Args:
        url: the URL in the hello.
        published: this host's own URLs (``url`` and ``urls`` of its record).
        sockname: the local address of the connection the hello came on
            (``(ip, port, ...)``), or ``None``.
    """
    url = url.rstrip("/")
    if url in published:
        return True
    if not isinstance(sockname, tuple) or len(sockname) < 2:  # noqa: PLR2004
        return False
    parts = urlsplit(url)
    if parts.path not in ("", "/"):
        return False
    try:
        dialed = ipaddress.ip_address(parts.hostname or "")
        local = ipaddress.ip_address(sockname[0])
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    return _plain(dialed) == _plain(local) and port == sockname[1]


def _plain(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
