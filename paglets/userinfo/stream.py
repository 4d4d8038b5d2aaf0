"""``NoticeStream``: a named text stream a paglet appends lines to (``self.context.stream``).

``write`` takes text, sends each whole line it completes in one call to the
host (at most `MAX_LINES` a call) and keeps the rest until a newline,
``flush`` or ``close``. A line longer than ``MAX_MESSAGE`` characters is
refused by the host, as a notice's message is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Self

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

MAX_LINES: Final = 1000  # as paglets.userinfo.routes.MAX_LINES, without importing aiohttp


class NoticeStream:
    """Lines of one stream; see the module docstring.

    Args:
        name: the stream's name (an identifier: ``build-log``).
        send: sends a list of whole lines to the host.
    """

    def __init__(self, name: str, send: Callable[[list[str]], object]) -> None:
        self.name = name
        self._send = send
        self._partial = ""

    def __repr__(self) -> str:
        return f"<NoticeStream {self.name}>"

    def write(self, text: str) -> int:
        """Append ``text``; each line it completes goes to the host now. Returns ``len(text)``."""
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for start in range(0, len(lines), MAX_LINES):
            self._send(lines[start : start + MAX_LINES])
        return len(text)

    def flush(self) -> None:
        """Send the last line even though it has no newline yet."""
        if self._partial:
            line, self._partial = self._partial, ""
            self._send([line])

    def close(self) -> None:
        """`flush`."""
        self.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
