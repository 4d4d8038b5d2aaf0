"""``PagletContext``: what a running paglet sees of its host.

The runtime provides the implementation; paglet code only reads it through
``self.context``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import logging
    from pathlib import Path


class PagletContext(Protocol):
    """The host as seen from inside a paglet."""

    @property
    def agent_id(self) -> str:
        """This paglet's id."""
        ...

    @property
    def host_name(self) -> str:
        """The name of the host the paglet runs on."""
        ...

    @property
    def host_url(self) -> str:
        """The URL of that host's API."""
        ...

    @property
    def work_dir(self) -> Path:
        """A scratch directory for this paglet, removed when it is disposed."""
        ...

    @property
    def pending_messages(self) -> int:
        """How many messages wait in the mailbox, not counting the one in hand."""
        ...

    @property
    def log(self) -> logging.Logger:
        """A logger named after the paglet."""
        ...
