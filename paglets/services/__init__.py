"""Resident services: long-lived paglets that answer typed requests (docs/services.md).

What a service author imports: `Contract` (a versioned name and its operations,
each a request and a reply dataclass) and `Service` (the paglet base class that
serves one). Importing this package loads neither the host nor aiohttp, so a
service's own module stays light in its child process.

- `paglets.services.registry`: a host's services, advertised and started on demand;
- `paglets.services.routes`: ``GET /v1/services`` and ``POST /v1/services/{c}/calls``.
"""

from paglets.core.contract import Contract, Operation
from paglets.runtime.service import Service

__all__ = ["Contract", "Operation", "Service"]
