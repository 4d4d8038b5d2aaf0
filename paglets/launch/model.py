"""The parsed launch config: typed, frozen, every value checked.

`LaunchConfig.options` maps what the file sets to the ``paglets-host`` options
of the same meaning, so a flag given on the command line overrides the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path


@dataclass(frozen=True, slots=True)
class StartupPaglet:
    """A paglet the host creates at start unless one with its id is already there.

    Attributes:
        agent_id: its stable id, so a restart finds it instead of making another.
        class_path: ``module:Class`` of the paglet.
        state: the initial state's fields, as JSON values.
        origin: ``file:line`` of its entry, for errors.
    """

    agent_id: str
    class_path: str
    state: dict[str, Any] = field(default_factory=dict)
    origin: str = ""


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    """A resident service the host advertises (``[[services]]``); see docs/services.md.

    Attributes:
        name: its name on this host; its paglet's id is ``service.<name>``.
        class_path: ``module:Class`` of its paglet (a `paglets.services.Service`).
        contract: the contract it serves, e.g. ``echo.v1``.
        where: tags a host must carry to run it (empty: any host).
        start: ``eager`` (at host start) or ``lazy`` (at its first call).
        scope: ``host``: one per host that runs it; ``mesh``: one in the mesh,
            on the first by name of the online hosts that advertise it.
        state: its initial state's fields, as JSON values.
        idle_after: seconds without a call after which it is deactivated
            (``None``: its class's ``deactivation_policy``).
        replicate: (``scope = "mesh"`` only) its state is copied to the other
            hosts that advertise it after its calls, and the host that takes over
            starts from the newest copy (`paglets.services.replicas`).
        origin: ``file:line`` of its entry, for errors.
    """

    name: str
    class_path: str
    contract: str
    where: tuple[str, ...] = ()
    start: str = "lazy"
    scope: str = "host"
    state: dict[str, Any] = field(default_factory=dict)
    idle_after: float | None = None
    replicate: bool = False
    origin: str = ""

    @property
    def agent_id(self) -> str:
        """The id of the service's paglet."""
        return f"service.{self.name}"

    def runs_on(self, tags: tuple[str, ...] | list[str]) -> bool:
        """Whether a host with ``tags`` runs this service."""
        return set(self.where) <= set(tags)


@dataclass(frozen=True, slots=True)
class HostSection:
    """``[host]``: who the host is in the mesh. ``None``: not set in the file."""

    name: str | None = None
    mesh_version: str | None = None
    tags: tuple[str, ...] | None = None
    properties: dict[str, str] | None = None
    peers: tuple[str, ...] | None = None
    file_roots: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class LimitsSection:
    """``[limits]``: the host's bounds, as the flags of the same name. ``None``: not set."""

    header_timeout: float | None = None
    idle_timeout: float | None = None
    max_connections: int | None = None
    max_envelope_size: int | None = None
    max_transfers: int | None = None
    transfer_min_rate: int | None = None
    max_paglets: int | None = None
    max_child_memory: int | None = None
    artifact_quota: int | None = None


@dataclass(frozen=True, slots=True)
class ModulesSection:
    """``[modules]``: module prefixes paglet classes may come from, modules to preload."""

    allow: tuple[str, ...] | None = None
    preload: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class ComputeSection:
    """``[compute]``: what the host's compute-slot scheduler hands out (docs/compute-slots.md).

    ``None``: the default (every CPU, 3/4 of the memory, the free space of the
    temp directory at start; a load gate of 1.0 per CPU).
    """

    cores: int | None = None
    ram: int | None = None
    tmp: int | None = None
    max_load_per_cpu: float | None = None
    max_queued: int | None = None


@dataclass(frozen=True, slots=True)
class LaunchConfig:
    """One launch file, parsed. ``path`` is where it was read from."""

    path: Path | None = None
    host: HostSection = field(default_factory=HostSection)
    limits: LimitsSection = field(default_factory=LimitsSection)
    modules: ModulesSection = field(default_factory=ModulesSection)
    paglets: tuple[StartupPaglet, ...] = ()
    services: tuple[ServiceEntry, ...] = ()
    compute: ComputeSection = field(default_factory=ComputeSection)

    def options(self) -> dict[str, Any]:
        """What the file sets, by ``paglets-host`` option name (as click's ``default_map``)."""
        host, limits, modules = self.host, self.limits, self.modules
        options: dict[str, Any] = {
            "name": host.name,
            "mesh_version": host.mesh_version,
            "tags": host.tags,
            "peers": host.peers,
            "file_roots": host.file_roots,
            "allow_modules": modules.allow,
            "preload": modules.preload,
        }
        if host.properties is not None:
            options["properties"] = [f"{k}={v}" for k, v in host.properties.items()]
        for name in LimitsSection.__slots__:
            options[name] = getattr(limits, name)
        return {k: v for k, v in options.items() if v is not None}
