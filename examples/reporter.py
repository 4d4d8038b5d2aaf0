"""A paglet that reports to the person: notices and a text stream (docs/user-info.md)."""

from __future__ import annotations

from typing import Any

from paglets import Message, Paglet, PagletState


class Reporter(Paglet[PagletState]):
    """On ``work``: a line per step in the stream ``<job>-log``, then one notice when done."""

    def handle_message(self, message: Message) -> Any:
        if message.kind == "work":
            job = str(message.args["job"])
            steps = int(message.args.get("steps", 3))
            with self.context.stream(f"{job}-log", job=job) as log:
                for step in range(1, steps + 1):
                    log.write(f"step {step} of {steps} done\n")
            return self.context.notify(
                f"{job} finished",
                f"all {steps} steps done on {self.context.host_name}",
                severity="info",
                job=job,
            )
        if message.kind == "alarm":
            return self.context.notify(str(message.args["title"]), severity="error")
        return self.not_handled()
