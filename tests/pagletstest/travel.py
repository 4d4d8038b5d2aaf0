"""A traveler for the tests that carries any path the test names.

`examples.travel.Traveler` only carries files of its own work directory; the
movement tests also carry files they made elsewhere (under ``tmp_path``), and so
use this test-only subclass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from examples.travel import Traveler

if TYPE_CHECKING:
    from paglets import Message


class FreeTraveler(Traveler):
    """A `Traveler` that also takes ``carry {"path", "mode"}`` with any host path."""

    def handle_message(self, message: Message) -> Any:
        if message.kind == "carry" and "path" in message.args:
            args = message.args
            return self.context.register_file(args["path"], mode=args.get("mode", "copy"))
        return super().handle_message(message)
