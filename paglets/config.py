"""``HostConfig``: every option of a host, checked once."""

from __future__ import annotations

import ipaddress
import math
import os
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from paglets.core.errors import ConfigurationError
from paglets.core.ids import IdKind, is_valid_id
from paglets.launch.model import ComputeSection
from paglets.runtime.privileges import ChildUser
from paglets.runtime.records import SupervisorLimits
from paglets.transport.tls import ca_context

if TYPE_CHECKING:
    from paglets.launch.model import ServiceEntry, StartupPaglet

DEFAULT_API_KEY_ENV = "PAGLETS_API_KEY"
DEFAULT_MAX_BODY = 16 * 1024 * 1024
DEFAULT_MAX_ENVELOPE = 4 << 30
RELAY_TRANSPORTS = ("auto", "websocket", "long-poll")


def default_state_dir() -> Path:
    """``PAGLETS_HOME`` if set, else the platform's per-user state directory."""
    home = os.environ.get("PAGLETS_HOME")
    if home:
        return Path(home)
    import platformdirs  # noqa: PLC0415 - not for a command's --help

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
    child_user: str | None = None  # run children as this user (the host runs as root)
    max_body: int = DEFAULT_MAX_BODY
    read_timeout: float = 30.0
    # Connections and arriving envelopes (see docs/operations.md, "Limits").
    header_timeout: float = 10.0  # a request head must arrive whole within this
    idle_timeout: float = 75.0  # a kept-alive connection with no request is closed after this
    max_connections: int = 1024
    max_envelope_size: int = DEFAULT_MAX_ENVELOPE
    max_transfers: int = 16  # envelopes received at once
    transfer_min_rate: int = 64 * 1024  # bytes/s an envelope must keep up, after read_timeout
    debug_errors: bool = False  # tracebacks in error bodies and events (--debug-errors)
    limits: SupervisorLimits = field(default_factory=SupervisorLimits)
    # The mesh (see docs/mesh.md).
    tags: tuple[str, ...] = ()
    properties: dict[str, str] = field(default_factory=dict)
    public_url: str | None = None
    bind_public: bool | tuple[str, ...] = False  # True: the detected LAN address, watched
    discovery: bool | None = None  # None: on for non-loopback binds
    discovery_interfaces: tuple[str, ...] = ()  # addresses for mDNS; empty: all
    gossip_interval: float = 1.0
    offline_after: float = 5.0
    address_poll_interval: float = 5.0
    # TLS and the relay (see docs/relay.md): a host serving HTTPS itself, a private CA
    # this host trusts for its own calls, and connect mode (no listening socket).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    ca_file: Path | None = None
    connect_to: str | None = None
    relay_transport: str = "auto"
    relay_offline_after: float = 30.0  # a hub refuses items for a host gone this long
    relay_delivery_timeout: float = 60.0  # a hub answers 504 to an item unanswered this long
    relay_queue_limit: int = 1000  # items a hub holds for one relayed host
    # Movement (see docs/movement.md): fsync envelopes and the journal before a
    # commit counts, so a committed move survives a power cut, not only a crash.
    transfer_fsync: bool = True
    # Classes shipped by value from key holders (see docs/notebooks.md); code registered
    # in the host's own process runs without it.
    trust_code_by_value: bool = False
    # Paglets created at start unless there already (launch.toml [[paglets]]).
    startup: tuple[StartupPaglet, ...] = ()
    # Resident services advertised here (launch.toml [[services]], docs/services.md).
    services: tuple[ServiceEntry, ...] = ()
    # Bytes of artifacts kept (paglets.artifacts, docs/artifacts.md).
    artifact_quota: int = 1 << 30
    # What the compute-slot scheduler hands out (launch.toml [compute]).
    compute: ComputeSection = field(default_factory=ComputeSection)
    # Where file-moving paglets may read and write, beyond the defaults (--file-root).
    file_roots: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        self._normalise()
        self._validate()

    def _normalise(self) -> None:
        state_dir: object = self.state_dir
        if isinstance(state_dir, str):
            object.__setattr__(self, "state_dir", Path(state_dir))
        object.__setattr__(self, "properties", dict(self.properties))
        if not isinstance(self.bind_public, bool):
            object.__setattr__(self, "bind_public", tuple(self.bind_public))
            if not self.bind_public:
                object.__setattr__(self, "bind_public", True)
        if self.public_url is not None:
            object.__setattr__(self, "public_url", self.public_url.rstrip("/"))
        if self.connect_to is not None:
            object.__setattr__(self, "connect_to", self.connect_to.rstrip("/"))
        for name in ("tls_cert", "tls_key", "ca_file"):
            path: object = getattr(self, name)
            if isinstance(path, str):
                object.__setattr__(self, name, Path(path))
        names = ("peers", "allow_modules", "preload", "secret_env", "tags", "discovery_interfaces")
        for name in names:
            value: object = getattr(self, name)
            if isinstance(value, str):
                raise ConfigurationError(f"{name} must be a sequence of strings, not a string")
            object.__setattr__(self, name, tuple(value))  # type: ignore[arg-type]
        object.__setattr__(self, "startup", tuple(self.startup))
        object.__setattr__(self, "services", tuple(self.services))
        object.__setattr__(self, "file_roots", tuple(Path(root) for root in self.file_roots))

    def _validate(self) -> None:
        if not is_valid_id(self.name, IdKind.HOST):
            raise ConfigurationError(
                f"host name {self.name!r} is not valid: use 1 to {IdKind.HOST.limit} letters, "
                "digits, '.', '_' and '-', starting with a letter or a digit (--name)"
            )
        if not 0 <= self.port <= 65535:  # noqa: PLR2004 - the port range
            raise ConfigurationError(f"port {self.port} is outside 0-65535")
        if self.spawner not in ("zygote", "spawn"):
            raise ConfigurationError("spawner must be 'zygote' or 'spawn'")
        if not 0 <= self.warm_children <= 64:  # noqa: PLR2004 - a sane bound
            raise ConfigurationError("warm_children must be between 0 and 64")
        if self.max_body < 1024:  # noqa: PLR2004 - a useful minimum
            raise ConfigurationError("max_body must be at least 1024 bytes")
        self._validate_limits()
        self._validate_file_roots()
        if self.api_key is not None and not self.api_key:
            raise ConfigurationError("the API key must not be empty")
        self.child_account()
        if self.trust_code_by_value and not self.api_key:
            raise ConfigurationError(
                "--trust-code-by-value needs an API key: code by value runs whatever it is "
                "sent, so only key holders may send it; set PAGLETS_API_KEY (or "
                "--api-key-file PATH)"
            )
        if not self.binds_loopback_only and not self.api_key and not self.insecure:
            shown = "the LAN address" if self.bind_public is True else self.bind_addresses[0]
            raise ConfigurationError(
                f"refusing to bind {shown} without an API key: set PAGLETS_API_KEY "
                "(or --api-key-env NAME, or --api-key-file PATH), or pass --insecure to accept "
                "unauthenticated access"
            )
        self._validate_mesh()
        self._validate_relay()

    def _validate_relay(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigurationError("give --tls-cert and --tls-key together")
        for name in ("relay_offline_after", "relay_delivery_timeout"):
            if not 0 < getattr(self, name) < math.inf:
                raise ConfigurationError(f"{name} must be a positive number of seconds")
        if self.relay_queue_limit < 1:
            raise ConfigurationError("relay_queue_limit must be at least 1")
        if self.relay_transport not in RELAY_TRANSPORTS:
            raise ConfigurationError(
                f"relay transport {self.relay_transport!r} is not one of {RELAY_TRANSPORTS}"
            )
        for role, url in (("--public-url", self.public_url), ("--connect-to", self.connect_to)):
            if url is not None and not self.api_key and (self.connect_to or not self.insecure):
                raise ConfigurationError(
                    f"refusing to start with {role} without an API key: a relay hub and its "
                    "clients authenticate each other with it; set PAGLETS_API_KEY (or "
                    "--api-key-env NAME, or --api-key-file PATH)"
                )
        if self.connect_to is not None:
            self._validate_connect_mode(self.connect_to)

    def _validate_connect_mode(self, connect_to: str) -> None:
        if not connect_to.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"--connect-to {connect_to!r} must be the hub's http(s):// URL"
            )
        clashes = {
            "--public-url": self.public_url is not None,
            "--bind-public": bool(self.bind_public),
            "--peer": bool(self.peers),
            "--tls-cert": self.tls_cert is not None,
            "--discovery": bool(self.discovery),
        }
        given = [flag for flag, on in clashes.items() if on]
        if given:
            raise ConfigurationError(
                f"--connect-to opens no listening socket and reaches the mesh through its hub "
                f"only: drop {', '.join(given)}"
            )

    def server_ssl(self) -> ssl.SSLContext | None:
        """The TLS context the host serves with (``--tls-cert``/``--tls-key``), or ``None``.

        Raises:
            ConfigurationError: a file is missing or is not a certificate and its key.
        """
        if self.tls_cert is None or self.tls_key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.tls_cert, self.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"cannot load the TLS certificate {self.tls_cert} with its key {self.tls_key}: "
                f"{exc}; give a PEM certificate (chain) and its unencrypted private key"
            ) from None
        return context

    def client_ssl(self) -> ssl.SSLContext | bool:
        """The TLS checks of this host's own calls: the system's CAs, plus ``--ca-file``.

        Raises:
            ConfigurationError: the CA file is missing or holds no certificate.
        """
        if self.ca_file is None:
            return True
        return ca_context(self.ca_file)

    @property
    def connect_mode(self) -> bool:
        """Whether this host reaches the mesh only through a hub (``--connect-to``)."""
        return self.connect_to is not None

    def _validate_file_roots(self) -> None:
        for root in self.file_roots:
            if not root.is_absolute():
                raise ConfigurationError(f"file root {root} must be an absolute path (--file-root)")

    def _validate_limits(self) -> None:
        for name in ("read_timeout", "header_timeout", "idle_timeout"):
            value = getattr(self, name)
            if not 0 < value < math.inf:
                raise ConfigurationError(f"{name} must be a positive number of seconds")
        for name in ("max_connections", "max_transfers", "transfer_min_rate"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"{name} must be at least 1")
        if self.max_envelope_size < 1024:  # noqa: PLR2004 - a useful minimum
            raise ConfigurationError("max_envelope_size must be at least 1024 bytes")
        if self.artifact_quota < 0:
            raise ConfigurationError("artifact_quota must be 0 (no artifacts) or more bytes")

    def _validate_mesh(self) -> None:
        for tag in self.tags:
            if not tag or any(c.isspace() or c == "," for c in tag):
                raise ConfigurationError(f"tag {tag!r} must be non-empty without spaces or ','")
        for key, value in self.properties.items():
            if not isinstance(key, str) or not key or "=" in key or not isinstance(value, str):
                raise ConfigurationError(f"property {key!r} must be KEY=VALUE with a non-empty KEY")
        self._validate_addresses()
        if not self.gossip_interval > 0:
            raise ConfigurationError("gossip_interval must be positive")
        if not self.offline_after > self.gossip_interval:
            raise ConfigurationError(
                f"offline_after ({self.offline_after:g} s) must be longer than "
                f"gossip_interval ({self.gossip_interval:g} s)"
            )
        if not self.address_poll_interval > 0:
            raise ConfigurationError("address_poll_interval must be positive")

    def _validate_addresses(self) -> None:
        if self.public_url is not None and not self.public_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"public URL {self.public_url!r} must start with http(s)://")
        for address in self.bind_public if isinstance(self.bind_public, tuple) else ():
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ConfigurationError(
                    f"--bind-public {address!r} is not an IP address of this machine"
                ) from None

    def child_account(self) -> ChildUser | None:
        """The user children run as (``child_user`` looked up), or ``None``.

        Raises:
            ConfigurationError: the host is not root, or there is no such user.
        """
        return None if self.child_user is None else ChildUser.lookup(self.child_user)

    @property
    def bind_addresses(self) -> tuple[str, ...]:
        """The addresses to bind; empty when ``bind_public`` asks to detect one."""
        if self.bind_public is True:
            return ()
        if self.bind_public:
            return self.bind_public
        return (self.host,)

    @property
    def binds_loopback_only(self) -> bool:
        """Whether the host listens on loopback addresses only."""
        if self.bind_public is True:
            return False
        return all(is_loopback(a) for a in self.bind_addresses)

    @property
    def discovery_enabled(self) -> bool:
        """zeroconf discovery: as asked, else on exactly when the host binds beyond loopback."""
        if self.connect_to is not None:
            return False
        if self.discovery is not None:
            return self.discovery
        return not self.binds_loopback_only

    @property
    def home(self) -> Path:
        """This host's own directory under the state directory."""
        return (self.state_dir or default_state_dir()) / self.name

    @property
    def store_path(self) -> Path:
        """This host's journal database (transfers, paglets, events)."""
        return self.home / "paglets.db"

    @property
    def all_file_roots(self) -> tuple[Path, ...]:
        """Where file-moving paglets may read and write: the system temp directory,
        this host's files directory, then each ``--file-root``, absolute."""
        import tempfile  # noqa: PLC0415 - only when a host starts

        roots = (Path(tempfile.gettempdir()), self.home / "files", *self.file_roots)
        return tuple(dict.fromkeys(root.absolute() for root in roots))
