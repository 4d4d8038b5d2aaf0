"""Start the launch file's startup paglets, once per id.

A startup paglet is created when the host starts and no paglet with its id is
listed there (active or inactive, after recovery): a restart finds the one it
made before, so it never makes a second. One that cannot start stops the host
with an error naming its entry in the launch file.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from paglets.core.errors import ConfigurationError, PagletError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from paglets.launch.model import StartupPaglet
    from paglets.runtime.supervisor import Supervisor

log = logging.getLogger(__name__)


async def start_paglets(supervisor: Supervisor, paglets: Sequence[StartupPaglet]) -> int:
    """Create each of ``paglets`` not already on the host; how many it created.

    Raises:
        ConfigurationError: one could not start (its class is not allowed or not
            importable, its state does not fit); the message starts with its
            ``file:line`` and says what to fix.
    """
    created = 0
    for paglet in paglets:
        if supervisor.find(paglet.agent_id) is not None:
            log.debug("startup paglet %s is here already", paglet.agent_id)
            continue
        try:
            await supervisor.create(paglet.class_path, dict(paglet.state), paglet.agent_id)
        except PagletError as exc:
            where = f"{paglet.origin}: " if paglet.origin else ""
            raise ConfigurationError(
                f"{where}startup paglet {paglet.agent_id} ({paglet.class_path}) "
                f"did not start: {exc}; fix: correct or remove this [[paglets]] entry"
            ) from exc
        created += 1
        log.info("started startup paglet %s (%s)", paglet.agent_id, paglet.class_path)
    return created
