"""``paglets-host``: run one paglets host as a daemon.

::

    paglets-host --name alpha --port 8765 --mesh-version dev
    paglets-host --name beta --port 8766 --peer http://127.0.0.1:8765

The host serves until SIGTERM or SIGINT, then stops accepting requests, stops
its paglets within a bound and exits 0. ``--ready-file`` lets a supervisor (a
test, a script, the demo) wait for the host without polling its port.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from paglets.runtime import dataclasscode

# This module is the daemon's entry point: the dataclasses its imports below make
# (the options' records, the config, the launch file's model) take their methods'
# code from the cache too, not only those of paglets.host (about 70 more compiles);
# and so do the attrs classes aiohttp makes as it is imported (about 30).
dataclasscode.install(attrs=True)

import click  # noqa: E402

from paglets._version import __version__  # noqa: E402
from paglets.cli._errors import run_cli  # noqa: E402
from paglets.cli._output import examples  # noqa: E402
from paglets.cli._units import BYTES  # noqa: E402
from paglets.config import DEFAULT_API_KEY_ENV, HostConfig  # noqa: E402
from paglets.runtime.records import SupervisorLimits  # noqa: E402
from paglets.transport.apikey import CREDENTIALS_ENV, KEY_FILE_ENV, load_api_key  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Sequence

    from paglets.host import Host
    from paglets.launch.model import LaunchConfig
    from paglets.runtime.spawner import ZygoteSpawner
    from paglets.update.updater import Updater

log = logging.getLogger(__name__)

PROG = "paglets-host"
DEFAULT_PORT = 8765
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_LIMITS = SupervisorLimits()
# where a key may come from: removed from the host's environment, never given to children
KEY_SOURCES = (DEFAULT_API_KEY_ENV, KEY_FILE_ENV, CREDENTIALS_ENV)
CODE_SAVE_DELAY = 2.0
"""Seconds after ready a host writes the dataclass code it compiled (`dataclasscode`)."""


def _check_peer(
    _ctx: click.Context, _param: click.Parameter, value: Sequence[str]
) -> tuple[str, ...]:
    for url in value:
        if not url.startswith(("http://", "https://")):
            raise click.BadParameter(f"peer URL {url!r} must start with http:// or https://")
    return tuple(url.rstrip("/") for url in value)


def _check_properties(
    _ctx: click.Context, _param: click.Parameter, value: Sequence[str]
) -> dict[str, str]:
    properties = {}
    for item in value:
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"property {item!r} must be KEY=VALUE")
        properties[key.strip()] = val
    return properties


def _bind_public(values: tuple[str, ...]) -> bool | tuple[str, ...]:
    """``--bind-public`` alone means "detect"; with addresses, exactly those."""
    if not values:
        return False
    addresses = tuple(v for v in values if v)
    if addresses and len(addresses) != len(values):
        raise click.BadParameter(
            "give --bind-public either alone (detect the LAN address) or with addresses",
            param_hint="--bind-public",
        )
    return addresses or True


def _load_launch(ctx: click.Context, _param: click.Parameter, value: Path | None) -> LaunchConfig:
    """Read the launch file first (an eager option): its values become the defaults
    of the other options, so a flag given on the command line overrides the file."""
    from paglets.launch.files import load_launch  # noqa: PLC0415 - not for --help

    launch = load_launch(value)
    ctx.default_map = {**launch.options(), **(ctx.default_map or {})}
    return launch


def _check_ready_file(
    _ctx: click.Context, _param: click.Parameter, value: Path | None
) -> Path | None:
    if value is not None and not value.parent.is_dir():
        raise click.BadParameter(f"directory {value.parent} does not exist")
    return value


@click.command(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=examples(
        "paglets-host --name alpha --port 8765",
        "paglets-host --name beta --port 8766 --peer http://127.0.0.1:8765",
        "paglets-host --config ./launch.toml --tag gpu",
        "PAGLETS_API_KEY=... paglets-host --name lab --bind-public --port 8765",
        "PAGLETS_API_KEY=... paglets-host --name hub --public-url https://example.com/paglets",
        "PAGLETS_API_KEY=... paglets-host --name b --connect-to https://example.com/paglets",
    ),
)
@click.option(
    "--config",
    "launch",
    type=click.Path(dir_okay=False, path_type=Path),
    is_eager=True,
    callback=_load_launch,
    metavar="PATH",
    help="Launch file to read.  [default: launch.toml in the user config dir, "
    "copied from the bundled default on first start]",
)
@click.option("--name", help="Host name in the mesh.  [default: this machine's hostname]")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port to bind; 0 picks any free port (see --ready-file).",
)
@click.option(
    "--peer",
    "peers",
    multiple=True,
    callback=_check_peer,
    metavar="URL",
    help="URL of another host of the mesh; repeatable.",
)
@click.option("--mesh-version", default="dev", show_default=True, help="Version of the mesh.")
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="A tag of this host; repeatable.")
@click.option(
    "--property",
    "properties",
    multiple=True,
    callback=_check_properties,
    metavar="KEY=VALUE",
    help="A property of this host, shown to the mesh; repeatable.",
)
@click.option(
    "--bind-public",
    multiple=True,
    is_flag=False,
    flag_value="",
    metavar="[ADDR]",
    help="Bind the detected LAN address and follow it when it changes; with ADDR, bind "
    "exactly that address (repeatable; the first is published). Replaces --host.",
)
@click.option(
    "--public-url",
    metavar="URL",
    help="The URL to publish to the mesh, if not the bound one; with a path prefix behind a "
    "reverse proxy (https://example.com/paglets). Needs an API key unless --insecure.",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    metavar="PATH",
    help="Serve HTTPS with this PEM certificate (chain); goes with --tls-key.",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    metavar="PATH",
    help="The private key of --tls-cert (PEM, not encrypted).",
)
@click.option(
    "--ca-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    metavar="PATH",
    help="PEM certificates of a private CA this host trusts, besides the system's, when it "
    "calls other hosts or its hub over HTTPS.",
)
@click.option(
    "--connect-to",
    metavar="URL",
    help="Connect mode: open no listening socket; reach the mesh through the hub at URL "
    "(its --public-url), over one outbound session. Needs an API key; no auto-update, "
    "no zeroconf.",
)
@click.option(
    "--relay-transport",
    type=click.Choice(("auto", "websocket", "long-poll")),
    default="auto",
    show_default=True,
    help="With --connect-to: the session to the hub; auto is a WebSocket, else long polls "
    "when a proxy refuses the upgrade.",
)
@click.option(
    "--relay-offline-after",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="On a hub: a relayed host without a session this long is offline; requests for it "
    "get 503 instead of being queued.",
)
@click.option(
    "--relay-delivery-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="On a hub: a relayed request not answered within this gets 504 (it stays queued).",
)
@click.option(
    "--relay-queue-limit",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    metavar="N",
    help="On a hub: requests queued for one relayed host; one more gets 429 with Retry-After.",
)
@click.option(
    "--discovery/--no-discovery",
    default=None,
    help="Announce and discover hosts with zeroconf.  [default: on unless bound to loopback only]",
)
@click.option(
    "--discovery-interface",
    "discovery_interfaces",
    multiple=True,
    metavar="ADDR",
    help="Address of an interface zeroconf uses; repeatable.  [default: all]",
)
@click.option(
    "--gossip-interval",
    type=click.FloatRange(min=0.01),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="Seconds between gossip rounds (heartbeats).",
)
@click.option(
    "--offline-after",
    type=click.FloatRange(min=0.02),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="Seconds without a heartbeat before a host is shown offline.",
)
@click.option(
    "--address-poll-interval",
    type=click.FloatRange(min=0.01),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="With --bind-public: seconds between checks of the LAN address.",
)
@click.option(
    "--api-key-env",
    default=DEFAULT_API_KEY_ENV,
    show_default=True,
    metavar="NAME",
    help="Environment variable holding the API key; paglets never see it.",
)
@click.option(
    "--api-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="File holding the API key (not readable by other users); else the variable of "
    "--api-key-env, $PAGLETS_API_KEY_FILE or the systemd credential paglets-api-key.",
)
@click.option(
    "--child-user",
    metavar="USER",
    help="Run paglets' processes as this user (the host must run as root).",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where hosts keep their state.  [default: $PAGLETS_HOME or the user state dir]",
)
@click.option(
    "--allow-module",
    "allow_modules",
    multiple=True,
    metavar="PREFIX",
    help="Module prefix paglet classes may come from; repeatable.",
)
@click.option(
    "--file-root",
    "file_roots",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    metavar="PATH",
    help="A directory file-moving paglets (paglets-file-grabber, paglets-search) may read "
    "and write, besides the temp directory and the host's files directory; repeatable.",
)
@click.option(
    "--trust-code-by-value",
    is_flag=True,
    help="Run paglet classes sent by value (defined in a script or notebook) by any key "
    "holder: code execution by design; needs an API key.  [default: off]",
)
@click.option(
    "--preload",
    multiple=True,
    metavar="MODULE",
    help="Module the zygote imports once, so paglets start fast; repeatable.",
)
@click.option(
    "--transfer-fsync/--no-transfer-fsync",
    default=True,
    show_default=True,
    help="fsync arriving paglets and the journal before a move commits (survives power "
    "cuts); without it a committed move survives a crash of the host process only.",
)
@click.option(
    "--header-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="Close a connection whose request head has not arrived whole within this.",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=75.0,
    show_default=True,
    metavar="SECONDS",
    help="Close a kept-alive connection that sends no request for this long.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    metavar="N",
    help="Connections open at once (kept below the open-files limit); over it, the one "
    "waiting longest for a request is closed, or the new one gets 503 if all are busy.",
)
@click.option(
    "--max-envelope-size",
    type=BYTES,
    default="4GiB",
    show_default=True,
    metavar="SIZE",
    help="The largest arriving paglet (envelope) taken, e.g. 512MiB; larger gets 413.",
)
@click.option(
    "--artifact-quota",
    type=BYTES,
    default="1GiB",
    show_default=True,
    metavar="SIZE",
    help="Bytes of artifacts this host keeps (paglets-artifacts); an upload past it gets 507.",
)
@click.option(
    "--max-transfers",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    metavar="N",
    help="Envelopes received at once; one more gets 429 and its paglet stays at its source.",
)
@click.option(
    "--transfer-min-rate",
    type=BYTES,
    default="64KiB",
    show_default=True,
    metavar="SIZE",
    help="Bytes a second an arriving envelope must keep up (after a 30 s grace); a slower "
    "one is dropped.",
)
@click.option(
    "--max-paglets",
    type=click.IntRange(min=1),
    default=DEFAULT_LIMITS.max_paglets,
    show_default=True,
    metavar="N",
    help="Paglets running at once (with a process); one more create, arrival or activation "
    "gets 503.",
)
@click.option(
    "--max-child-memory",
    type=BYTES,
    default=None,
    metavar="SIZE",
    help="Memory (the sum of their RSS) the paglets' processes may use before new ones get "
    "503, e.g. 8GiB.  [default: 3/4 of this machine's memory]",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Allow binding a non-loopback address without an API key.",
)
@click.option(
    "--debug-errors",
    is_flag=True,
    help="Put tracebacks in error bodies and events (they show code paths); off in production.",
)
@click.option(
    "--git-auto-update",
    is_flag=True,
    help="Follow a git branch: fetch it, and on a new commit fast-forward, sync with uv, "
    "check and restart on it, one host of the mesh at a time (see docs/auto-update.md). "
    "Whoever can push to the branch runs code on this host.",
)
@click.option(
    "--git-remote",
    metavar="NAME",
    help="With --git-auto-update: the remote to "
    "follow.  [default: the branch's upstream, else origin]",
)
@click.option(
    "--git-branch",
    metavar="NAME",
    help="With --git-auto-update: the branch to follow.  [default: the branch checked out]",
)
@click.option(
    "--update-interval",
    type=click.FloatRange(min=0.1),
    default=300.0,
    show_default=True,
    metavar="SECONDS",
    help="With --git-auto-update: seconds between fetches (a peer seen on a new commit "
    "triggers one at once).",
)
@click.option(
    "--update-ready-timeout",
    type=click.FloatRange(min=0.1),
    default=120.0,
    show_default=True,
    metavar="SECONDS",
    help="With --git-auto-update: how long a host restarted on a new commit has to be "
    "ready; later, it goes back to its old commit.",
)
@click.option(
    "--ready-file",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=_check_ready_file,
    help='Once listening, write {"url", "pid", "name"} as JSON here; removed at exit.',
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="info",
    show_default=True,
)
@click.version_option(__version__, prog_name=PROG)
def command(  # click passes options by keyword
    *,
    launch: LaunchConfig,
    name: str | None,
    host: str,
    port: int,
    peers: tuple[str, ...],
    mesh_version: str,
    tags: tuple[str, ...],
    properties: dict[str, str],
    bind_public: tuple[str, ...],
    public_url: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    ca_file: Path | None,
    connect_to: str | None,
    relay_transport: str,
    relay_offline_after: float,
    relay_delivery_timeout: float,
    relay_queue_limit: int,
    discovery: bool | None,
    discovery_interfaces: tuple[str, ...],
    gossip_interval: float,
    offline_after: float,
    address_poll_interval: float,
    api_key_env: str,
    api_key_file: Path | None,
    child_user: str | None,
    state_dir: Path | None,
    allow_modules: tuple[str, ...],
    file_roots: tuple[Path, ...],
    trust_code_by_value: bool,
    preload: tuple[str, ...],
    transfer_fsync: bool,
    header_timeout: float,
    idle_timeout: float,
    max_connections: int,
    max_envelope_size: int,
    artifact_quota: int,
    max_transfers: int,
    transfer_min_rate: int,
    max_paglets: int,
    max_child_memory: int | None,
    insecure: bool,
    debug_errors: bool,
    git_auto_update: bool,
    git_remote: str | None,
    git_branch: str | None,
    update_interval: float,
    update_ready_timeout: float,
    ready_file: Path | None,
    log_level: str,
) -> None:
    """Run a paglets host until SIGTERM or SIGINT."""
    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    source = click.get_current_context().get_parameter_source("host")
    if bind_public and source is click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("--bind-public replaces --host: give one of them")
    secrets = tuple(dict.fromkeys((*KEY_SOURCES, api_key_env)))
    key = load_api_key(api_key_file, env_name=api_key_env)
    # where the key came from, for a re-execution by --git-auto-update only
    sources = {name: os.environ[name] for name in secrets if name in os.environ}
    for secret in secrets:  # what is left of them is /proc/<pid>/environ: see protect_host
        os.environ.pop(secret, None)
    if key is not None:
        log.info("API key from %s", key.source)
    log.debug("launch config %s", launch.path)
    config = HostConfig(
        name=name or socket.gethostname(),
        host=host,
        port=port,
        api_key=None if key is None else key.value,
        child_user=child_user,
        mesh_version=mesh_version,
        peers=peers,
        tags=tags,
        properties=properties,
        bind_public=_bind_public(bind_public),
        public_url=public_url,
        tls_cert=tls_cert,
        tls_key=tls_key,
        ca_file=ca_file,
        connect_to=connect_to,
        relay_transport=relay_transport,
        relay_offline_after=relay_offline_after,
        relay_delivery_timeout=relay_delivery_timeout,
        relay_queue_limit=relay_queue_limit,
        discovery=discovery,
        discovery_interfaces=discovery_interfaces,
        gossip_interval=gossip_interval,
        offline_after=offline_after,
        address_poll_interval=address_poll_interval,
        state_dir=state_dir,
        allow_modules=allow_modules,
        file_roots=tuple(root.absolute() for root in file_roots),
        insecure=insecure,
        debug_errors=debug_errors,
        preload=preload,
        secret_env=secrets,
        transfer_fsync=transfer_fsync,
        trust_code_by_value=trust_code_by_value,
        header_timeout=header_timeout,
        idle_timeout=idle_timeout,
        max_connections=max_connections,
        max_envelope_size=max_envelope_size,
        max_transfers=max_transfers,
        transfer_min_rate=transfer_min_rate,
        limits=dataclasses.replace(
            DEFAULT_LIMITS,
            max_paglets=max_paglets,
            max_child_memory=(
                default_child_memory() if max_child_memory is None else max_child_memory
            ),
        ),
        startup=launch.paglets,
        services=launch.services,
        artifact_quota=artifact_quota,
        compute=launch.compute,
    )
    if connect_to is not None and git_auto_update:
        raise click.UsageError("--connect-to disables --git-auto-update: update the host by hand")
    if (git_remote or git_branch) and not git_auto_update:
        raise click.UsageError("--git-remote and --git-branch go with --git-auto-update")
    zygote = _launch_zygote(config)
    from paglets.transport.cacerts import import_aiohttp  # noqa: PLC0415 - not for --help

    import_aiohttp()  # its CA certificates load when a TLS connection of the host's needs them
    from paglets.persistence.store import StoreOpening  # noqa: PLC0415 - not for --help

    # the journal opens (a new one: its schema, its flushes) on its thread, beside them too
    store = StoreOpening(config.store_path, sync=config.transfer_fsync)
    from paglets.host import Host  # noqa: PLC0415 - heavy (aiohttp): imported while it boots
    from paglets.runtime.warmup import freeze_imports  # noqa: PLC0415 - not for --help

    freeze_imports()
    server = Host(config, zygote=zygote, store=store)
    updater = None
    if git_auto_update:
        from paglets.update.updater import UpdateConfig, Updater  # noqa: PLC0415 - when asked

        updater = Updater(
            server,
            UpdateConfig(
                remote=git_remote,
                branch=git_branch,
                interval=update_interval,
                ready_timeout=update_ready_timeout,
                lease_time=max(600.0, 2 * update_ready_timeout),
            ),
        )
    asyncio.run(_serve(server, ready_file, updater))
    if updater is not None and updater.restart is not None:
        from paglets.update.restart import command_line, reexec  # noqa: PLC0415

        bound = server.url if server.started_at else None
        # the next process finds its key where this one did (the variables removed above)
        reexec(command_line(port, bound), {**os.environ, **sources})


def _launch_zygote(config: HostConfig) -> ZygoteSpawner | None:
    """Launch the host's zygote now, so that it boots while the host imports and starts.

    Its imports and warm-up take about as long as the host's own on a small
    machine; run one after the other they were half of the time to ready.
    """
    from paglets.runtime.spawner import ZygoteSpawner  # noqa: PLC0415 - not for --help

    if config.spawner != "zygote":
        return None
    zygote = ZygoteSpawner(
        preload=config.preload, secrets=config.secret_env, user=config.child_account()
    )
    zygote.launch()
    return zygote


def default_child_memory() -> int:
    """The daemon's budget for its children's memory: three quarters of the machine's."""
    try:  # what psutil.virtual_memory().total reads, without its import (~40 ms)
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        import psutil  # noqa: PLC0415 - not for --help, and only where sysconf cannot tell

        total = psutil.virtual_memory().total
    return total * 3 // 4


async def _serve(host: Host, ready_file: Path | None, updater: Updater | None = None) -> None:
    from paglets.runtime import dataclasscode  # noqa: PLC0415 - not for --help
    from paglets.runtime.warmup import freeze_heap  # noqa: PLC0415 - not for --help

    def announce(ready: Host) -> None:
        freeze_heap()  # what a started daemon holds, no full collection walks again
        if ready_file is not None:
            _write_ready_file(ready_file, ready)
        # what this start compiled, for the next (after a change): off the first requests
        asyncio.get_running_loop().call_later(CODE_SAVE_DELAY, dataclasscode.save)

    try:
        if updater is None:
            await host.serve_forever(on_ready=announce)
        else:
            from paglets.update.restart import serve  # noqa: PLC0415

            await serve(host, updater, announce)
    finally:
        if ready_file is not None:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(ready_file.unlink)


def _write_ready_file(path: Path, host: Host) -> None:
    """Write the ready file atomically: a reader sees all of it or nothing."""
    data = {"url": host.url, "pid": os.getpid(), "name": host.name}
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temp.write_text(json.dumps(data) + "\n", encoding="utf-8")
        temp.replace(path)
    finally:
        temp.unlink(missing_ok=True)
    log.debug("wrote ready file %s", path)


def main() -> None:
    """Entry point of the ``paglets-host`` console script."""
    from paglets.runtime.osutil import keep_freed_memory  # noqa: PLC0415

    keep_freed_memory()  # an envelope's bytes pass through buffers of up to 1 MiB
    gc.disable()  # until ready: then warmup.freeze_heap collects once and turns it on
    run_cli(command, PROG)


if __name__ == "__main__":
    main()
