"""A paglet written in a notebook cell (here: a script's __main__), shipped by value."""

import asyncio
import tempfile
from dataclasses import dataclass, field

from paglets import AsyncHostClient, Host, Message, Paglet, PagletState


@dataclass
class TallyState(PagletState):
    words: dict[str, int] = field(default_factory=dict)
    route: list[str] = field(default_factory=list)


class Tally(Paglet[TallyState]):
    """Counts the words it is sent, wherever it is."""

    State = TallyState

    def on_creation(self, event):
        self.state.route.append(event.host_name)

    def on_arrival(self, event):
        self.state.route.append(event.host_name)

    def handle_message(self, message: Message):
        for word in message.args.get("text", "").split():
            self.state.words[word] = self.state.words.get(word, 0) + 1
        return {"words": self.state.words, "route": self.state.route}


async def main() -> None:
    with tempfile.TemporaryDirectory() as state_dir:
        async with (
            Host(name="alpha", state_dir=state_dir) as alpha,
            Host(name="beta", state_dir=state_dir, peers=(alpha.url,)) as beta,
            AsyncHostClient(alpha.url) as client,
        ):
            tally = await client.create(Tally)  # the class itself: it goes by value
            print(await tally.send("count", {"text": "to be or not to be"}))
            info = await tally.info()
            print("its class path names its code:", info.class_path.split("@")[0], "@ sha256")

            await tally.dispatch("beta")  # its code went with it
            print(await tally.send("count", {"text": "be quick"}))
            print("paglets on beta:", len(beta.supervisor.list()))


if __name__ == "__main__":
    asyncio.run(main())
