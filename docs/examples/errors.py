"""What callers see when things go wrong: one typed error per failure."""

import asyncio
import tempfile

from paglets import (
    AsyncHostClient,
    ClassNotAllowedError,
    ClassNotFoundError,
    HandlerError,
    Host,
    InvalidStateError,
    MessageNotHandledError,
    PagletCrashedError,
    PagletDisposedError,
    PagletError,
    PagletNotFoundError,
    PagletTimeoutError,
)


async def main() -> None:
    with tempfile.TemporaryDirectory() as state_dir:
        async with (
            # debug_errors: error bodies carry tracebacks (never on a production host)
            Host(name="errors", state_dir=state_dir, debug_errors=True) as host,
            AsyncHostClient(host.url) as client,
        ):
            counter = await client.create("examples.counter:Counter")

            # Creating: the class must be allowed, importable, and the state must fit.
            for class_path, state in [
                ("myapp.agents:Worker", None),
                ("examples.nowhere:Counter", None),
                ("examples.counter:Counter", {"count": "many"}),
            ]:
                try:
                    await client.create(class_path, state)
                except (ClassNotAllowedError, ClassNotFoundError, InvalidStateError) as exc:
                    print(f"{type(exc).__name__}: {exc}")

            # Messages: unknown kinds, handlers that raise, slow handlers.
            try:
                await counter.send("reset")
            except MessageNotHandledError as exc:
                print(f"MessageNotHandledError: {exc}")
            try:
                await counter.send("increment", {"by": "two"})
            except HandlerError as exc:
                print(f"HandlerError: {exc}")
                # The traceback from the paglet's process, for debugging:
                print("  remote traceback ends:", exc.remote_traceback.splitlines()[-1])

            fragile = await client.create("examples.fragile:Fragile")
            try:
                await fragile.send("sleep", {"seconds": 1}, timeout=0.2)
            except PagletTimeoutError as exc:
                print(f"PagletTimeoutError: {exc}")

            # Crash isolation: the paglet's process dies, the host and others go on.
            try:
                await fragile.send("crash", {"code": 9})
            except PagletCrashedError as exc:
                print(f"PagletCrashedError: {exc}")
            print("fragile is", (await fragile.info()).status)
            print("counter still answers:", await counter.send("increment"))

            await counter.dispose()
            try:
                await counter.send("get")
            except PagletDisposedError as exc:
                print(f"PagletDisposedError: {exc}")
            try:
                await client.proxy("no-such-id").send("get")
            except PagletNotFoundError as exc:
                print(f"PagletNotFoundError: {exc}")

            # Every one of them is a PagletError.
            try:
                await client.create("os:system")
            except PagletError as exc:
                print(f"caught as PagletError: {type(exc).__name__}")


if __name__ == "__main__":
    asyncio.run(main())
