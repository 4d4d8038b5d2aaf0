"""``Paglet``: the base class of every mobile agent."""

from __future__ import annotations

import inspect
import time
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from paglets.core.errors import ConfigurationError
from paglets.core.message import NOT_HANDLED, _NotHandled
from paglets.core.policy import RestartPolicy
from paglets.core.state import PagletState

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from paglets.core.context import PagletContext, PagletLink
    from paglets.core.events import LifecycleEvent
    from paglets.core.message import Message
    from paglets.core.movement import TransferTicket

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
    #: What the host does when this paglet's process ends unasked (default: nothing).
    restart_policy: ClassVar[RestartPolicy] = RestartPolicy()
    #: Seconds without a message after which the host deactivates the paglet
    #: (None: never by itself).
    deactivation_policy: ClassVar[float | None] = None

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

    def on_dispatching(self, event: LifecycleEvent) -> Awaitable[None] | None:
        """Called before the paglet leaves for ``event.target`` (`dispatch`)."""

    def on_retracting(self, event: LifecycleEvent) -> Awaitable[None] | None:
        """Called before the paglet is pulled back to ``event.target`` by a retract."""

    def on_arrival(self, event: LifecycleEvent) -> Awaitable[None] | None:
        """Called on the new host after a dispatch or retract, before ``run()``.

        Registered files are in place already; ``event.origin`` names the host
        the paglet came from.
        """

    def on_cloning(self, event: LifecycleEvent) -> Awaitable[None] | None:
        """Called in the original before its state is copied for a clone."""

    def on_clone(self, event: LifecycleEvent) -> Awaitable[None] | None:
        """Called in the copy, on its host, before its ``run()``; it has a new id."""

    def on_cloned(self, event: LifecycleEvent) -> Awaitable[None] | None:
        """Called in the original once the copy exists; ``event.clone_id`` is its id."""

    def on_deactivating(self, event: LifecycleEvent) -> Awaitable[None] | None:
        """Called before the paglet is written to disk and its process stops."""

    def on_activation(self, event: LifecycleEvent) -> Awaitable[None] | None:
        """Called when an inactive paglet runs again (after deactivation, or a host
        restart), before ``run()``."""

    def run(self) -> Awaitable[None] | None:
        """Background work, started after the paglet becomes active.

        Override with ``async def run(self)`` to run on the paglet's event loop
        between messages (``await`` often), or with plain ``def run(self)`` to
        run in a thread of its own (then guard shared state yourself).
        Creation returns without waiting for ``run()``.
        """

    # -- movement -------------------------------------------------------------

    def dispatch(self, target: str, ticket: TransferTicket | None = None) -> None:
        """Move this paglet to ``target`` (a host name or URL).

        ``on_dispatching`` runs first; then the state (as it is now) and the
        registered files travel, and the paglet continues on the target with
        ``on_arrival`` and ``run()``. Here, the handler that called `dispatch`
        finishes, and its later changes to ``self.state`` stay behind: return
        soon after. Messages that were waiting follow the paglet.

        Raises:
            TransferError: the move did not happen (target refused, unreachable,
                or the ticket is not met); the paglet stays here, running.
        """
        self.context.dispatch(target, ticket)

    def clone(self, target: str | None = None, ticket: TransferTicket | None = None) -> PagletLink:
        """Copy this paglet, with a new id, to ``target`` (default: this host).

        ``on_cloning`` runs here first, ``on_clone`` in the copy, then
        ``on_cloned`` here. Returns a handle to the copy.
        """
        return self.context.clone(target, ticket)

    def dispose(self) -> None:
        """Dispose this paglet once the current handler returns (``on_disposing`` runs)."""
        self.context.dispose()

    def deactivate(self, duration: float | None = None, *, until: float | None = None) -> None:
        """Write this paglet to disk and stop its process once the current handler returns.

        ``on_deactivating`` runs first. A message activates it again, as does the
        wake-up time: ``duration`` seconds from now, or ``until`` (seconds since
        the epoch). Without either it sleeps until its next message.
        """
        self.context.deactivate(_wake_at(duration, until))

    def checkpoint(self) -> None:
        """Write the state as it is now to disk: the host recovers from it after a crash."""
        self.context.checkpoint()

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


def _wake_at(duration: float | None, until: float | None) -> float | None:
    if duration is not None and until is not None:
        raise ConfigurationError("give deactivate() a duration or an until time, not both")
    if duration is not None:
        if duration < 0:
            raise ConfigurationError("a deactivation duration cannot be negative")
        return time.time() + duration
    return until
