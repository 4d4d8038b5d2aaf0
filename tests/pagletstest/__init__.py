"""Test-only paglets: they misbehave on request, so they never ship and no host allows them.

``pagletstest`` lives under ``tests/`` (the wheel holds only ``paglets`` and
``examples``) and is outside the default module allow-list. A test host allows it
explicitly: in-process hosts from the ``make_host`` fixture get
``allow_modules=(PREFIX,)``; a ``paglets-host`` process gets ``--allow-module
pagletstest`` and an environment from `host_env`, whose ``PYTHONPATH`` lets the
host and its children import it.
"""

from __future__ import annotations

import os
from pathlib import Path

PREFIX = "pagletstest"
"""The module prefix a test host allows to create these paglets."""

PATH_ENTRY = str(Path(__file__).resolve().parent.parent)
"""The directory that makes ``pagletstest`` importable (``tests/``)."""


def host_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with `PATH_ENTRY` first on ``PYTHONPATH`` and `PREFIX` allowed.

    For a ``paglets-host`` process (and so its children): the prefix is added to
    ``PAGLETS_ALLOW_MODULES``, which every host adds to its allow-list.
    """
    out = dict(env)
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [PATH_ENTRY, env.get("PYTHONPATH")]))
    allowed = [p for p in env.get("PAGLETS_ALLOW_MODULES", "").split(",") if p]
    out["PAGLETS_ALLOW_MODULES"] = ",".join(dict.fromkeys([*allowed, PREFIX]))
    return out
