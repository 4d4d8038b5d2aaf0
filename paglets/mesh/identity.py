"""``HostIdentity``: this host's Ed25519 key pair, and the signatures on host records.

A host makes its key pair on first start and keeps the private key in
``<home>/mesh/identity.key`` (PKCS#8 PEM, mode 0600, in a 0700 directory); it
never leaves that file. The public key travels in the host's gossip record,
which the host signs (`HostRecord.signed_bytes`) once per change of its own
record, and its peers pin it by name on first sight (`paglets.mesh.pins`).
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import os
import stat
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from paglets.core.errors import ConfigurationError
from paglets.wire.mesh import fingerprint

if TYPE_CHECKING:
    from pathlib import Path

    from paglets.wire.mesh import HostRecord

log = logging.getLogger(__name__)

IDENTITY_FILE = "identity.key"

# An Ed25519 private key as PKCS#8 DER is this fixed header and the 32-byte seed
# (RFC 8410, section 7), and its PEM is that in base64 on one line. Keys are read
# and written in that form by hand: cryptography's serialization module costs
# 40-70 ms to import, a tenth of a host's start. Any other PEM is left to it.
_PKCS8_ED25519 = bytes.fromhex("302e020100300506032b657004220420")
_PEM_BEGIN = b"-----BEGIN PRIVATE KEY-----\n"
_PEM_END = b"\n-----END PRIVATE KEY-----\n"


class HostIdentity:
    """See the module docstring.

    Args:
        key: the host's private key.
    """

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        raw = key.public_key().public_bytes_raw()
        self.public_key = base64.b64encode(raw).decode()
        self.fingerprint = fingerprint(self.public_key)
        self._signed: tuple[bytes, str] | None = None  # (signed bytes, signature)

    def __repr__(self) -> str:
        return f"<HostIdentity {self.fingerprint}>"

    @classmethod
    def load_or_create(cls, directory: Path) -> HostIdentity:
        """The identity kept in ``directory``, made there first if there is none (blocking).

        Raises:
            ConfigurationError: the key file exists but is not an Ed25519 private key.
        """
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.chmod(0o700)  # also when it was there already
        path = directory / IDENTITY_FILE
        try:
            return cls(_create(path))
        except FileExistsError:
            pass
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning("%s was readable by others (mode %o); made it 0600", path, mode)
            path.chmod(0o600)
        try:
            key = _load_pem(path.read_bytes())
        except ValueError as exc:
            raise ConfigurationError(
                f"{path} is not a host identity key ({exc}); move it away and restart to "
                "make a new identity (peers that pinned the old one must re-pin this host)"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigurationError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
        return cls(key)

    def sign(self, record: HostRecord) -> HostRecord:
        """``record`` with this identity's public key and signature.

        The signature is made only when what it covers changed since the last call.
        """
        record = record.replace(public_key=self.public_key, signature=None)
        payload = record.signed_bytes()
        if self._signed is None or self._signed[0] != payload:
            signature = base64.b64encode(self._key.sign(payload)).decode()
            self._signed = (payload, signature)
        return record.replace(signature=self._signed[1])


def _create(path: Path) -> Ed25519PrivateKey:
    """A new key written to ``path`` (0600), whole or not at all; `FileExistsError` if there."""
    if path.exists():
        raise FileExistsError(path)
    key = Ed25519PrivateKey.generate()
    pem = _pem(key)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, path)  # never replaces a key another process made meanwhile
    finally:
        tmp.unlink(missing_ok=True)
    log.debug("made a new host identity in %s", path)
    return key


def _pem(key: Ed25519PrivateKey) -> bytes:
    """``key`` as unencrypted PKCS#8 PEM, byte for byte what cryptography writes."""
    der = _PKCS8_ED25519 + key.private_bytes_raw()
    return _PEM_BEGIN + base64.b64encode(der) + _PEM_END


def _load_pem(pem: bytes) -> object:
    """The private key in ``pem`` (`ValueError` if there is none)."""
    if pem.startswith(_PEM_BEGIN) and pem.endswith(_PEM_END):
        try:
            der = base64.b64decode(pem[len(_PEM_BEGIN) : -len(_PEM_END)], validate=True)
        except binascii.Error:
            der = b""
        if len(der) == len(_PKCS8_ED25519) + 32 and der.startswith(_PKCS8_ED25519):
            return Ed25519PrivateKey.from_private_bytes(der[len(_PKCS8_ED25519) :])
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 - see _PKCS8_ED25519

    return serialization.load_pem_private_key(pem, password=None)


@functools.lru_cache(maxsize=4096)
def _public_key(encoded: str) -> Ed25519PublicKey | None:
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError):
        return None


def verify(record: HostRecord) -> bool:
    """Whether ``record`` is signed by the key it carries."""
    if record.public_key is None or record.signature is None:
        return False
    key = _public_key(record.public_key)
    if key is None:
        return False
    try:
        key.verify(base64.b64decode(record.signature), record.signed_bytes())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True
