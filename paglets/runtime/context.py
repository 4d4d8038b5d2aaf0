"""The child's implementation of `paglets.core.context.PagletContext`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from paglets.runtime.mailbox import Mailbox


class ChildContext:
    """What a paglet sees of its host, from inside its process."""

    def __init__(
        self, *, agent_id: str, host_name: str, host_url: str, work_dir: Path, mailbox: Mailbox
    ) -> None:
        self._agent_id = agent_id
        self._host_name = host_name
        self._host_url = host_url
        self._work_dir = work_dir
        self._mailbox = mailbox
        self._log = logging.getLogger(f"paglets.agent.{agent_id}")

    @property
    def agent_id(self) -> str:
        return self._agent_id

    @property
    def host_name(self) -> str:
        return self._host_name

    @property
    def host_url(self) -> str:
        return self._host_url

    @property
    def work_dir(self) -> Path:
        self._work_dir.mkdir(parents=True, exist_ok=True)
        return self._work_dir

    @property
    def pending_messages(self) -> int:
        return len(self._mailbox)

    @property
    def log(self) -> logging.Logger:
        return self._log

    def __repr__(self) -> str:
        return f"<ChildContext {self._agent_id} on {self._host_name}>"
