"""``Paglet``: the base class of every mobile agent."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from paglets.core.errors import ConfigurationError
from paglets.core.message import NOT_HANDLED, _NotHandled
from paglets.core.state import PagletState

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from paglets.core.context import PagletContext
    from paglets.core.events import LifecycleEvent
    from paglets.core.message import Message

StateT = TypeVar("StateT", bound=PagletState)


class Paglet(Generic[StateT]):
    """A mobile agent: one dataclass of state, lifecycle hooks and a message handler.

    Subclass it, set ``State`` to your `PagletState` dataclass and
    override what you need::

        class Counter(Paglet[CounterState]):
            State = CounterState

            def handle_message(self, message):
                if message.kind == "increment":
                    self.state.count += message.args.get("by", 1)
                    return {"count": self.state.count}
                return self.not_handled()

    Each active paglet runs in its own child process. Messages are handled one
    at a time, highest priority first and FIFO within a priority; handlers and
    hooks may be ``def`` or ``async def``. The class must be importable as
    ``module:qualname`` on the host that runs it.
    """

    State: ClassVar[type[PagletState]] = PagletState

    def __init__(self, state: StateT, context: PagletContext) -> None:
        self.state: StateT = state
        self.context: PagletContext = context

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        state_cls = cls.__dict__.get("State")
        if state_cls is not None and not (
            isinstance(state_cls, type) and issubclass(state_cls, PagletState)
        ):
            raise ConfigurationError(
                f"{cls.__qualname__}.State must be a PagletState dataclass, not {state_cls!r}"
            )

    # -- lifecycle hooks ------------------------------------------------------

    def on_creation(self, event: LifecycleEvent) -> Awaitable[None] | None:
        """Called once per identity, right after the paglet is created."""

    def on_disposing(self, event: LifecycleEvent) -> Awaitable[None] | None:
        """Called before the paglet is disposed; its process ends afterwards."""

    def run(self) -> Awaitable[None] | None:
        """Background work, started after the paglet becomes active.

        Override with ``async def run(self)`` to run on the paglet's event loop
        between messages (``await`` often), or with plain ``def run(self)`` to
        run in a thread of its own (then guard shared state yourself).
        Creation returns without waiting for ``run()``.
        """

    # -- messages -------------------------------------------------------------

    def handle_message(self, message: Message) -> Any:
        """Handle one message and return a JSON-compatible reply.

        Return `not_handled` for kinds the paglet does not understand.
        An exception raised here reaches the caller as a ``HandlerError``.
        """
        del message
        return self.not_handled()

    def not_handled(self) -> _NotHandled:
        """The reply that says this message kind is not handled."""
        return NOT_HANDLED

    # -- introspection used by the runtime ------------------------------------

    @classmethod
    def has_run(cls) -> bool:
        """Whether the class overrides `run`."""
        return cls.run is not Paglet.run

    @classmethod
    def run_is_async(cls) -> bool:
        """Whether the class's `run` is a coroutine function."""
        return inspect.iscoroutinefunction(cls.run)
