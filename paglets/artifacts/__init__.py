"""artifacts: blobs a host keeps for the person and its paglets, checked by sha256.

- `paglets.artifacts.model`: `ArtifactInfo`, names and checksums checked in one place;
- `paglets.artifacts.store`: `ArtifactStore`, the blobs under the host's home, within a quota;
- `paglets.artifacts.routes`: ``/v1/artifacts`` (list, put, get, rm, copy host-to-host).

The ``paglets-artifacts`` command uses them (docs/artifacts.md).
"""
