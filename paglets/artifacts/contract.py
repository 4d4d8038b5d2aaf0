"""``artifacts.v1``: the typed contract of a host's artifacts (`ARTIFACTS`).

Served by every host itself (no paglet to start), for what fits in a message:
listing, looking one up, removing, and copying host to host. The bytes go only
over the streaming routes (``PUT``/``GET /v1/artifacts/{name}``, what
``paglets-artifacts put|get`` use), never through a service call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from paglets.core.contract import Contract
from paglets.core.state import PagletState


@dataclass
class ArtifactRecord(PagletState):
    """One artifact: the fields of `paglets.artifacts.model.ArtifactInfo`."""

    name: str
    size: int
    sha256: str
    created: float
    host: str


@dataclass
class ListArtifacts(PagletState):
    """Ask for every artifact of the host."""


@dataclass
class ArtifactList(PagletState):
    """A host's artifacts by name, with its quota and the bytes used of it."""

    host: str
    quota: int
    used: int
    artifacts: list[ArtifactRecord] = field(default_factory=list)


@dataclass
class ArtifactName(PagletState):
    """One artifact, by name (``stat``, ``remove``)."""

    name: str


@dataclass
class CopyArtifact(PagletState):
    """Copy ``name`` to the host ``to`` (a name or URL of the mesh), as ``as_name``."""

    name: str
    to: str
    as_name: str | None = None


ARTIFACTS = Contract(
    "artifacts.v1",
    {
        "list": (ListArtifacts, ArtifactList),
        "stat": (ArtifactName, ArtifactRecord),
        "remove": (ArtifactName, ArtifactRecord),
        "copy": (CopyArtifact, ArtifactRecord),
    },
)
"""The contract of a host's artifacts."""
