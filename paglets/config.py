"""``HostConfig``: every option of a host, checked once."""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from paglets.core.errors import ConfigurationError
from paglets.runtime.supervisor import SupervisorLimits

DEFAULT_API_KEY_ENV = "PAGLETS_API_KEY"
DEFAULT_MAX_BODY = 16 * 1024 * 1024


def default_state_dir() -> Path:
    """``PAGLETS_HOME`` if set, else the platform's per-user state directory."""
    home = os.environ.get("PAGLETS_HOME")
    if home:
        return Path(home)
    return Path(platformdirs.user_state_dir("paglets"))


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address) only binds the loopback interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class HostConfig:
    """Options of one host. See ``paglets-host --help`` for their meaning."""

    name: str = field(default_factory=socket.gethostname)
    host: str = "127.0.0.1"
    port: int = 0
    api_key: str | None = None
    mesh_version: str = "dev"
    peers: tuple[str, ...] = ()
    state_dir: Path | None = None
    allow_modules: tuple[str, ...] = ()
    insecure: bool = False
    preload: tuple[str, ...] = ()
    spawner: str = "zygote"
    warm_children: int = 2
    secret_env: tuple[str, ...] = (DEFAULT_API_KEY_ENV,)
    max_body: int = DEFAULT_MAX_BODY
    read_timeout: float = 30.0
    limits: SupervisorLimits = field(default_factory=SupervisorLimits)

    def __post_init__(self) -> None:
        self._normalise()
        self._validate()

    def _normalise(self) -> None:
        state_dir: object = self.state_dir
        if isinstance(state_dir, str):
            object.__setattr__(self, "state_dir", Path(state_dir))
        for name in ("peers", "allow_modules", "preload", "secret_env"):
            value: object = getattr(self, name)
            if isinstance(value, str):
                raise ConfigurationError(f"{name} must be a sequence of strings, not a string")
            object.__setattr__(self, name, tuple(value))  # type: ignore[arg-type]

    def _validate(self) -> None:
        if not self.name or any(c.isspace() or c == "/" for c in self.name):
            raise ConfigurationError(
                f"host name {self.name!r} must be non-empty without spaces or '/'"
            )
        if not 0 <= self.port <= 65535:  # noqa: PLR2004 - the port range
            raise ConfigurationError(f"port {self.port} is outside 0-65535")
        if self.spawner not in ("zygote", "spawn"):
            raise ConfigurationError("spawner must be 'zygote' or 'spawn'")
        if not 0 <= self.warm_children <= 64:  # noqa: PLR2004 - a sane bound
            raise ConfigurationError("warm_children must be between 0 and 64")
        if self.max_body < 1024:  # noqa: PLR2004 - a useful minimum
            raise ConfigurationError("max_body must be at least 1024 bytes")
        if self.api_key is not None and not self.api_key:
            raise ConfigurationError("the API key must not be empty")
        if not is_loopback(self.host) and not self.api_key and not self.insecure:
            raise ConfigurationError(
                f"refusing to bind {self.host} without an API key: set PAGLETS_API_KEY "
                "(or --api-key-env NAME), or pass --insecure to accept unauthenticated access"
            )

    @property
    def home(self) -> Path:
        """This host's own directory under the state directory."""
        return (self.state_dir or default_state_dir()) / self.name
