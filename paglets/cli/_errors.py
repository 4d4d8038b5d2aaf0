"""The one place where a command's errors become a message a person can act on.

Every console script's ``main`` is ``run_cli(command, "prog-name")``. A
`PagletError`, a port that is already taken, a file that cannot be
written, or a bad option ends the
command with one line ``error: ...`` on stderr and exit code 2, never a traceback.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click

from paglets.core.errors import PagletError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

USAGE_EXIT = 2
INTERRUPTED_EXIT = 130


def run_cli(command: click.Command, prog_name: str, args: Sequence[str] | None = None) -> NoReturn:
    """Parse ``args`` (default ``sys.argv[1:]``), run ``command`` and exit."""
    argv = list(sys.argv[1:] if args is None else args)
    try:
        with command.make_context(prog_name, argv) as ctx:
            try:
                command.invoke(ctx)
            except OSError as exc:
                message = _os_error(exc, ctx.params)
                if message is None:
                    raise
                _fail(message)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        _fail(f"{exc.format_message()} (see '{prog_name} --help')", exc.exit_code)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except PagletError as exc:
        _fail(str(exc) or type(exc).__name__)
    except (KeyboardInterrupt, click.Abort):
        click.echo("interrupted", err=True)
        sys.exit(INTERRUPTED_EXIT)
    sys.exit(0)


def _os_error(exc: OSError, params: Mapping[str, Any]) -> str | None:
    """A one-line message for a file or socket the command could not use, else ``None``."""
    if exc.filename is not None:
        return f"cannot use {exc.filename}: {exc.strerror or exc}"
    port, host = params.get("port"), params.get("host")
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} is in use; pick another with --port"
    public = [a for a in params.get("bind_public") or () if a]
    if exc.errno == errno.EADDRNOTAVAIL and public:
        shown = ", ".join(public)
        return f"cannot bind {shown}: not an address of this machine; check --bind-public"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot bind {host}: no such local address; pick another with --host"
    if exc.errno == errno.EACCES and port is not None:
        return f"not allowed to bind port {port}; pick one above 1023 with --port"
    return None


def _fail(message: str, code: int = USAGE_EXIT) -> NoReturn:
    first_line = message.strip().splitlines()[0] if message.strip() else "failed"
    click.echo(f"error: {first_line}", err=True)
    sys.exit(code)
