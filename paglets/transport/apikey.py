"""Where the mesh's bearer key comes from: a file, the environment, or systemd credentials.

One helper, `load_api_key`, serves the host (``paglets-host``) and every
client. It looks, in this order, at:

1. a key file named explicitly (``--api-key-file PATH``, or the argument);
2. the environment variable (``PAGLETS_API_KEY``, or ``--api-key-env NAME``);
3. the file named by ``PAGLETS_API_KEY_FILE``;
4. systemd credentials: ``$CREDENTIALS_DIRECTORY/paglets-api-key``
   (``LoadCredential=paglets-api-key:/path`` in the unit).

The first that is set wins. A key file must be a regular file that other users
cannot read or write (``chmod 600``, or ``640`` for a group of operators):
anything else is refused, not warned about, since the key it holds is already
exposed. Surrounding whitespace is trimmed; an empty key, or one of more than
one line, is refused.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from paglets.config import DEFAULT_API_KEY_ENV
from paglets.core.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping

KEY_FILE_ENV = "PAGLETS_API_KEY_FILE"
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"
CREDENTIAL_NAME = "paglets-api-key"
MAX_KEY_FILE = 4096


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key and where it was found (for logs: never log the key)."""

    value: str
    source: str


def load_api_key(
    key_file: Path | str | None = None,
    *,
    env_name: str = DEFAULT_API_KEY_ENV,
    environ: Mapping[str, str] | None = None,
) -> ApiKey | None:
    """The mesh's key from the first source that is set (see the module docstring).

    Returns:
        The key, or ``None`` when no source is set (an open host or client).

    Raises:
        ConfigurationError: a key file that is missing, unreadable, readable or
            writable by other users, empty, too large or of several lines.
    """
    env = os.environ if environ is None else environ
    if key_file is not None:
        return ApiKey(read_key_file(Path(key_file)), f"file {key_file}")
    value = env.get(env_name)
    if value:
        if not value.strip():
            raise ConfigurationError(f"${env_name} is blank; set it to the key or unset it")
        return ApiKey(_one_line(value.strip(), f"${env_name}"), f"${env_name}")
    named = env.get(KEY_FILE_ENV)
    if named:
        return ApiKey(read_key_file(Path(named)), f"file {named} (${KEY_FILE_ENV})")
    credentials = env.get(CREDENTIALS_ENV)
    if credentials:
        path = Path(credentials) / CREDENTIAL_NAME
        if path.exists():
            return ApiKey(read_key_file(path), f"systemd credential {path}")
    return None


def read_key_file(path: Path) -> str:
    """The key held in ``path``, checked (see the module docstring).

    Raises:
        ConfigurationError: see `load_api_key`.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the API key file {path}: {exc.strerror or exc}"
        ) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ConfigurationError(f"the API key file {path} is not a regular file")
        if os.name == "posix" and st.st_mode & (stat.S_IROTH | stat.S_IWOTH):
            raise ConfigurationError(
                f"the API key file {path} can be read or written by other users "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); run chmod o-rw {path} (or chmod 600)"
            )
        data = f.read(MAX_KEY_FILE + 1)
    if len(data) > MAX_KEY_FILE:
        raise ConfigurationError(f"the API key file {path} is over {MAX_KEY_FILE} bytes")
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigurationError(f"the API key file {path} is not UTF-8 text") from None
    if not text:
        raise ConfigurationError(f"the API key file {path} is empty; put the key in it")
    return _one_line(text, f"the API key file {path}")


def _one_line(key: str, where: str) -> str:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):  # noqa: PLR2004 - control characters
        raise ConfigurationError(
            f"{where} holds a key with a line break or control character; a key is one line"
        )
    return key
