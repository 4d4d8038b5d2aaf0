"""TLS for clients that trust a private CA: ``--ca-file`` and ``$PAGLETS_CA_FILE``.

A host serving HTTPS itself (``--tls-cert``/``--tls-key``) or a hub behind a
reverse proxy with a certificate from a private CA is trusted by a client that
is given that CA's certificates: the system's CAs stay trusted too.
"""

from __future__ import annotations

import os
import ssl
from typing import TYPE_CHECKING, Final

from paglets.core.errors import ConfigurationError

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["CA_FILE_ENV", "ca_context", "env_ca_context"]

CA_FILE_ENV: Final = "PAGLETS_CA_FILE"
"""Environment variable naming a PEM file of CA certificates every client trusts."""


def ca_context(path: Path | str) -> ssl.SSLContext:
    """A client context trusting the system's CAs and those in the PEM file ``path``.

    Raises:
        ConfigurationError: the file cannot be read or holds no certificate.
    """
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=os.fspath(path))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"cannot load the CA file {path}: {exc}; give a file of PEM certificates"
        ) from None
    return context


def env_ca_context() -> ssl.SSLContext | None:
    """`ca_context` of ``$PAGLETS_CA_FILE`` if it is set, else ``None`` (the system's CAs)."""
    path = os.environ.get(CA_FILE_ENV)
    return ca_context(path) if path else None
