"""Resident services: contracts, ``[[services]]`` in launch.toml, the per-host registry,
lazy and eager start, idle deactivation, mesh-wide discovery and the typed clients."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from paglets import AsyncHostClient, HostClient, PagletState, ProtocolError, RequestError
from paglets.core.contract import Contract
from paglets.core.errors import (
    ConfigurationError,
    InvalidStateError,
    ServiceLeasedError,
    ServiceNotFoundError,
    ServiceUnavailableError,
)
from paglets.launch.model import ServiceEntry
from paglets.launch.parse import parse_launch
from paglets.services.leases import Lease, Leases
from paglets.services.replicas import Replica, Replicas
from paglets.wire.mesh import HostRecord
from pagletstest import host_env
from pagletstest.services import ECHO, CountRequest, EchoReply, EchoRequest
from tests.hostproc import env_without_key

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from paglets import Host
    from tests.hostproc import RunningHost

ECHO_CLASS = "pagletstest.services:Echo"
FAST = {"gossip_interval": 0.1, "offline_after": 1.0, "warm_children": 0}
STOP_BOUND = 30


def _echo(**changes: Any) -> ServiceEntry:
    return ServiceEntry(
        **{"name": "echo", "class_path": ECHO_CLASS, "contract": "echo.v1", **changes}
    )


async def _wait_for(
    predicate: Callable[[], Awaitable[bool]], what: str, timeout: float = 15
) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


# -- contracts ------------------------------------------------------------------------------


@dataclass
class _Plain(PagletState):
    value: int = 0


def test_a_contract_is_a_versioned_name_and_dataclass_operations() -> None:
    contract = Contract("store.blobs.v2", {"put": (_Plain, _Plain)})
    assert contract.operation("put").request is _Plain
    with pytest.raises(ConfigurationError, match="ending in a version"):
        Contract("store", {"put": (_Plain, _Plain)})
    with pytest.raises(ConfigurationError, match="must be a dataclass"):
        Contract("store.v1", {"put": (_Plain, dict)})
    with pytest.raises(ConfigurationError, match="lower-case identifier"):
        Contract("store.v1", {"Put": (_Plain, _Plain)})
    with pytest.raises(RequestError, match=r"contract store\.blobs\.v2 has no operation 'get'"):
        contract.operation("get")
    with pytest.raises(RequestError, match=r"store\.blobs\.v2: operation 'put' takes _Plain"):
        contract.check_request("put", {"value": 1})


# -- launch.toml ---------------------------------------------------------------------------


def _launch(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "launch.toml"
    path.write_text(text)
    return path


ECHO_TOML = f"""\
[host]
tags = ["lab"]

[[services]]
name = "echo"
class = "{ECHO_CLASS}"
contract = "echo.v1"
where = ["lab"]
start = "lazy"
scope = "host"
state = {{ greeting = "hi" }}
idle_after = 30
"""


def test_services_parse_to_typed_entries(tmp_path: Path) -> None:
    path = _launch(tmp_path, ECHO_TOML)
    (entry,) = parse_launch(path.read_text(), path).services
    assert entry == ServiceEntry(
        name="echo",
        class_path=ECHO_CLASS,
        contract="echo.v1",
        where=("lab",),
        start="lazy",
        scope="host",
        state={"greeting": "hi"},
        idle_after=30.0,
        origin=f"{path}:4",
    )
    assert entry.agent_id == "service.echo"
    assert entry.runs_on(["lab", "gpu"])
    assert not entry.runs_on(["gpu"])


BARE = f'[[services]]\nname = "echo"\nclass = "{ECHO_CLASS}"\ncontract = "echo.v1"\n'


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("idle = 3", r":5: services\[0\]\.idle is not a known key; fix: use one of: name"),
        ('start = "soon"', r":5: services\[0\]\.start must be 'eager' or 'lazy'"),
        ('scope = "world"', r":5: services\[0\]\.scope must be 'host' or 'mesh'"),
        ("idle_after = -1", r":5: services\[0\]\.idle_after must be a positive number"),
        ('where = "gpu"', r":5: services\[0\]\.where must be a list of strings"),
        ('name = "../x"', r":2: services\[0\]\.name must be 1 to 64 lower-case"),
        ('replicate = "yes"', r":5: services\[0\]\.replicate must be true or false"),
        ("replicate = true", r":5: services\[0\]\.replicate is for a service that is one in"),
    ],
)
def test_a_bad_service_entry_names_its_line(tmp_path: Path, line: str, error: str) -> None:
    text = BARE.replace('name = "echo"', line) if line.startswith("name") else BARE + line
    path = _launch(tmp_path, text)
    with pytest.raises(ConfigurationError, match=error):
        parse_launch(path.read_text(), path)


def test_a_service_entry_needs_a_contract_and_one_per_contract(tmp_path: Path) -> None:
    path = _launch(tmp_path, '[[services]]\nname = "echo"\nclass = "a.b:C"\n')
    with pytest.raises(ConfigurationError, match=r":1: services\[0\] entry has no contract"):
        parse_launch(path.read_text(), path)
    second = BARE.replace('"echo"\n', '"two"\n', 1)
    path = _launch(tmp_path, BARE + "\n" + second)
    with pytest.raises(ConfigurationError, match=r":9: services\[1\]\.contract 'echo\.v1' is the"):
        parse_launch(path.read_text(), path)
    path = _launch(tmp_path, '[[services]]\nname = "x"\nclass = "a.b:C"\ncontract = "echo"\n')
    with pytest.raises(ConfigurationError, match=r":4: .*ending in a version"):
        parse_launch(path.read_text(), path)


# -- the host record ---------------------------------------------------------------------------


def _record(**changes: Any) -> dict[str, Any]:
    base = HostRecord("beta", "http://127.0.0.1:1", "dev", 1, "0").to_dict()
    return {**base, **changes}


def test_the_host_record_carries_the_contracts_it_serves_checked() -> None:
    assert "services" not in _record(), "left out when empty: older hosts read it"
    record = HostRecord.from_dict(_record(services=["echo.v1"]))
    assert record.services == ["echo.v1"]
    assert HostRecord.from_dict(record.to_dict()) == record
    assert record.signed_bytes() != record.replace(services=[]).signed_bytes()
    with pytest.raises(ProtocolError, match="not a contract name"):
        HostRecord.from_dict(_record(services=["../etc"]))
    with pytest.raises(ProtocolError, match="limit is 64"):
        HostRecord.from_dict(_record(services=[f"s{i}.v1" for i in range(65)]))
    with pytest.raises(ProtocolError, match="must be a list of strings"):
        HostRecord.from_dict(_record(services="echo.v1"))


# -- one host --------------------------------------------------------------------------------


async def test_a_lazy_service_is_advertised_and_fifty_first_calls_start_one(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    host = await make_host(services=[_echo(state={"greeting": "hi"})])
    async with AsyncHostClient(host.url) as client:
        (info,) = await client.services()
        assert (info.contract, info.name, info.status, info.start) == (
            "echo.v1",
            "echo",
            "advertised",
            "lazy",
        )
        assert await client.list() == [], "advertised before its paglet runs"
        (me,) = await client.hosts()
        assert me.services == ["echo.v1"]

        echo = client.service(ECHO)
        replies = await asyncio.gather(*(echo.echo(EchoRequest(f"t{i}")) for i in range(50)))
        assert all(isinstance(r, EchoReply) for r in replies)
        assert sorted(r.calls for r in replies) == list(range(1, 51)), "each call handled once"
        assert len({r.pid for r in replies}) == 1
        assert {r.greeting for r in replies} == {"hi"}, "started from the entry's state"
        assert [p.agent_id for p in await client.list()] == ["service.echo"]
        (info,) = await client.services()
        assert info.status == "active"
        assert (await echo.call("count", CountRequest())).calls == 50


async def test_wrong_requests_are_refused_naming_the_contract(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    host = await make_host(services=[_echo()])
    async with AsyncHostClient(host.url) as client:
        echo = client.service(ECHO)
        with pytest.raises(RequestError, match=r"echo\.v1: operation 'echo' takes EchoRequest"):
            await echo.echo(CountRequest())
        with pytest.raises(RequestError, match=r"contract echo\.v1 has no operation 'shout'"):
            echo.shout  # noqa: B018 - the lookup is the test
        assert await client.list() == [], "refused before anything was sent"
        path = "/v1/services/echo.v1/calls"
        with pytest.raises(InvalidStateError, match=r"contract echo\.v1: the echo request"):
            await client.request("POST", path, {"op": "echo", "request": {"txt": "x"}})
        with pytest.raises(RequestError, match=r"contract echo\.v1 has no operation 'shout'"):
            await client.request("POST", path, {"op": "shout", "request": {}})
        with pytest.raises(RequestError, match="has no field"):
            await client.request("POST", path, {"op": "echo", "request": {}, "extra": 1})
        with pytest.raises(RequestError, match="service name"):
            await client.request("POST", "/v1/services/..%2F/calls", {"op": "x", "request": {}})
        with pytest.raises(ProtocolError, match="returned a CountReply, not its reply type"):
            await echo.echo(EchoRequest("wrong reply"))
        with pytest.raises(ServiceNotFoundError, match=r"no host of the mesh .* serves echo\.v2"):
            await client.request("POST", "/v1/services/echo.v2/calls", {"op": "x", "request": {}})


async def test_an_eager_service_starts_with_the_host_and_an_idle_one_sleeps(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    host = await make_host(services=[_echo(start="eager", idle_after=0.5)])
    async with AsyncHostClient(host.url) as client:
        (info,) = await client.services()
        assert info.status == "active", "eager: started with the host"
        echo = client.service(ECHO)
        first = await echo.echo(EchoRequest("a"))

        async def asleep() -> bool:
            return (await client.services())[0].status == "inactive"

        await _wait_for(asleep, "idle deactivation")
        second = await echo.echo(EchoRequest("b"))
        assert second.calls == first.calls + 1, "its state survived the deactivation"
        assert second.pid != first.pid, "a new process"
        assert (await client.services())[0].status == "active"


async def test_a_service_whose_tags_the_host_lacks_is_not_served_there(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    host = await make_host(services=[_echo(where=("gpu",))])
    async with AsyncHostClient(host.url) as client:
        assert await client.services() == []
        with pytest.raises(ServiceNotFoundError, match=r"serves echo\.v1"):
            await client.service(ECHO).echo(EchoRequest("x"))


# -- the mesh ----------------------------------------------------------------------------------


async def test_a_service_is_found_across_the_mesh_and_its_offline_host_is_named(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    entry = _echo(where=("gpu",))
    alpha = await make_host(name="alpha", services=[entry], **FAST)
    beta = await make_host(name="beta", services=[entry], tags=("gpu",), peers=(alpha.url,), **FAST)
    async with AsyncHostClient(alpha.url) as client:

        async def sees_beta() -> bool:
            return any(s.host == "beta" for s in await client.services(mesh=True))

        await _wait_for(sees_beta, "beta's services in alpha's view")
        (row,) = await client.services(mesh=True)
        assert (row.contract, row.host, row.online, row.status) == ("echo.v1", "beta", True, None)
        assert await client.services() == [], "alpha itself serves nothing"

        reply = await client.service(ECHO).echo(EchoRequest("via alpha"))
        assert reply.text == "via alpha"
        named = await client.service(ECHO, where="beta").echo(EchoRequest("named"))
        assert named.calls == reply.calls + 1, "the same service"
        caller = await client.create("pagletstest.services:Caller")
        asked = await caller.send("ask", {"text": "from a paglet"})
        assert asked == {"text": "from a paglet", "calls": named.calls + 1, "type": "EchoReply"}
        with pytest.raises(ServiceNotFoundError, match=r"host alpha serves no echo\.v1"):
            await client.service(ECHO, where="alpha").echo(EchoRequest("x"))
        leased = client.service(ECHO)
        assert (await leased.take_lease(30)).host == "beta", "the lease is on beta's service"
        with pytest.raises(ServiceLeasedError, match="leased by another caller"):
            await client.service(ECHO).echo(EchoRequest("x"))
        await leased.release_lease()

        await beta.stop()

        async def beta_offline() -> bool:
            return not any(s.online for s in await client.services(mesh=True))

        await _wait_for(beta_offline, "beta offline")
        started = time.monotonic()
        with pytest.raises(
            ServiceUnavailableError,
            match=r"echo\.v1 is unavailable \(host beta offline for \d+ s\)",
        ):
            await client.service(ECHO).echo(EchoRequest("x"))
        with pytest.raises(ServiceUnavailableError, match=r"host beta offline for"):
            await caller.send("ask", {"text": "x", "where": "beta"})
        assert time.monotonic() - started < 5, "it says so at once, it does not hang"


async def test_a_mesh_service_runs_on_one_host_and_the_next_takes_over(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    entry = _echo(scope="mesh", state={"greeting": "first"})
    alpha = await make_host(name="alpha", services=[entry], **FAST)
    beta = await make_host(name="beta", services=[entry], peers=(alpha.url,), **FAST)
    async with AsyncHostClient(beta.url) as at_beta, AsyncHostClient(alpha.url) as at_alpha:

        async def joined() -> bool:
            return len(await at_beta.services(mesh=True)) == 2

        await _wait_for(joined, "alpha and beta to see each other")
        replies = await asyncio.gather(
            *(c.service(ECHO).echo(EchoRequest("x")) for c in (at_alpha, at_beta) * 5)
        )
        assert sorted(r.calls for r in replies) == list(range(1, 11)), "one service for both"
        assert len({r.pid for r in replies}) == 1
        assert (await at_alpha.services())[0].status == "active", "alpha comes first by name"
        (mine,) = await at_beta.services()
        assert (mine.status, mine.scope) == ("advertised", "mesh"), "none runs on beta"
        assert await at_beta.list() == []

        await alpha.stop()
        reply = await at_beta.service(ECHO).echo(EchoRequest("after"))
        assert (reply.calls, reply.greeting) == (1, "first"), "beta's, from the initial state"
        assert (await at_beta.services())[0].status == "active"


# -- a real host process ------------------------------------------------------------------------


def test_a_host_process_serves_the_services_of_its_launch_file(
    start_host: Callable[..., RunningHost], tmp_path: Path
) -> None:
    config = _launch(tmp_path, ECHO_TOML)
    host = start_host("--config", str(config), env=host_env(env_without_key()))
    with HostClient(host.url) as client:
        (info,) = client.services()
        assert (info.contract, info.status) == ("echo.v1", "advertised")
        echo = client.service(ECHO)
        reply = echo.echo(EchoRequest("blocking"))
        assert (reply.text, reply.greeting, reply.calls) == ("blocking", "hi", 1)
        with pytest.raises(RequestError, match=r"echo\.v1"):
            echo.echo("not a request")
        assert client.services()[0].status == "active"
    host.process.send_signal(signal.SIGTERM)
    assert host.process.wait(STOP_BOUND) == 0, host.log()

    again = start_host("--config", str(config), name=host.name, env=host_env(env_without_key()))
    with HostClient(again.url) as client:
        assert client.service(ECHO).echo(EchoRequest("again")).calls == 2, "the same service"


def test_the_docs_example_declares_the_greeter() -> None:
    path = Path(__file__).resolve().parents[1] / "docs" / "examples" / "services.toml"
    launch = parse_launch(path.read_text(), path)
    (entry,) = launch.services
    assert (entry.name, entry.class_path, entry.contract) == (
        "greeter",
        "examples.greeter:Greeter",
        "greeter.v1",
    )
    assert entry.runs_on(launch.host.tags or ())
    assert entry.scope == "host"
    assert (entry.start, entry.idle_after, entry.state) == ("lazy", 300.0, {"greeting": "hi"})


# -- leases ---------------------------------------------------------------------------------


def test_a_lease_excludes_others_until_released_or_lapsed() -> None:
    now = [100.0]
    leases = Leases(clock=lambda: now[0])
    held = leases.take("echo.v1", 10)
    leases.check("echo.v1", held.lease_id)
    with pytest.raises(ServiceLeasedError, match=r"leased by another caller for 10\.0 more s"):
        leases.check("echo.v1", None)
    with pytest.raises(ServiceLeasedError, match="leased by another caller"):
        leases.take("echo.v1", 10)
    now[0] += 8
    assert leases.take("echo.v1", 10, held.lease_id) == Lease(held.lease_id, 118.0), "renewed"
    now[0] += 9
    leases.check("echo.v1", held.lease_id)
    now[0] += 2  # not renewed: lapsed
    leases.check("echo.v1", None)
    with pytest.raises(ServiceLeasedError, match="lapsed or was released"):
        leases.check("echo.v1", held.lease_id)
    again = leases.take("echo.v1", 5)
    assert not leases.release("echo.v1", held.lease_id), "an old lease releases nothing"
    assert leases.release("echo.v1", again.lease_id)
    leases.check("echo.v1", None)


async def test_a_leased_service_serves_its_holder_only(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    host = await make_host(name="alpha", services=[_echo()])
    async with AsyncHostClient(host.url) as client:
        mine, theirs = client.service(ECHO), client.service(ECHO)
        lease = await mine.take_lease(30)
        assert lease.host == "alpha"
        assert 29 < lease.expires_in <= 30
        assert (await mine.echo(EchoRequest("mine"))).calls == 1
        with pytest.raises(ServiceLeasedError, match=r"echo\.v1 is leased by another caller"):
            await theirs.echo(EchoRequest("theirs"))
        with pytest.raises(ServiceLeasedError, match="leased by another caller"):
            await theirs.take_lease(5)
        assert (await mine.renew_lease(60)).expires_in > 59
        caller = await client.create("pagletstest.services:Caller")
        with pytest.raises(ServiceLeasedError, match="leased by another caller"):
            await caller.send("ask", {"text": "a paglet"})
        await mine.release_lease()
        assert mine.lease is None
        assert (await theirs.echo(EchoRequest("theirs"))).calls == 2
        with pytest.raises(RequestError, match="taken without 'lease'"):
            await client.request(
                "POST", "/v1/services/echo.v1/lease", {"action": "renew", "seconds": 5}
            )
        with pytest.raises(RequestError, match="'seconds' of a lease"):
            await client.request(
                "POST", "/v1/services/echo.v1/lease", {"action": "take", "seconds": 1e9}
            )


HOLDER = """
import sys, time
from paglets import HostClient
from pagletstest.services import ECHO, EchoRequest
with HostClient(sys.argv[1]) as client:
    echo = client.service(ECHO)
    echo.take_lease(1.0)
    echo.echo(EchoRequest("holder"))
    print("held", flush=True)
    while True:
        time.sleep(0.2)
        echo.renew_lease()
"""


def test_a_lease_lapses_when_its_holder_is_killed(
    start_host: Callable[..., RunningHost], tmp_path: Path
) -> None:
    config = _launch(tmp_path, ECHO_TOML)
    host = start_host("--config", str(config), env=host_env(env_without_key()))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, host.url],
        stdout=subprocess.PIPE,
        env=host_env(env_without_key()),
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with HostClient(host.url) as client:
            echo = client.service(ECHO)
            time.sleep(1.5)  # longer than the lease: only its renewals keep it
            with pytest.raises(ServiceLeasedError, match="leased by another caller"):
                echo.echo(EchoRequest("too early"))
            holder.send_signal(signal.SIGKILL)
            holder.wait()
            deadline = time.monotonic() + 10
            while True:
                try:
                    lease = echo.take_lease(5)
                    break
                except ServiceLeasedError:
                    assert time.monotonic() < deadline, "the lease never lapsed"
                    time.sleep(0.1)
            assert echo.echo(EchoRequest("after")).calls == 2
            echo.release_lease()
            assert lease.host == host.name
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def test_a_mesh_service_comes_back_on_another_host_when_its_host_is_killed(
    start_host: Callable[..., RunningHost], tmp_path: Path
) -> None:
    config = _launch(tmp_path, BARE + 'scope = "mesh"\n')
    fast = ("--gossip-interval", "0.1", "--offline-after", "1")
    env = host_env(env_without_key())
    first = start_host("--config", str(config), *fast, env=env)
    second = start_host("--config", str(config), *fast, "--peer", first.url, env=env)
    assert first.name < second.name, "the first comes first by name"
    with HostClient(second.url) as client:
        deadline = time.monotonic() + 15
        while len(client.services(mesh=True)) < 2:
            assert time.monotonic() < deadline, "the hosts never saw each other"
            time.sleep(0.05)
        echo = client.service(ECHO)
        assert echo.echo(EchoRequest("one")).calls == 1
        assert echo.echo(EchoRequest("two")).calls == 2
        assert client.services()[0].status == "advertised", "it runs on the first host"

        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
        deadline = time.monotonic() + 15
        while True:
            try:
                reply = echo.echo(EchoRequest("back"))
                break
            except ServiceUnavailableError:
                assert time.monotonic() < deadline, "the service never came back"
                time.sleep(0.1)
        assert reply.calls == 1, "restarted on the second host, from its initial state"
        assert client.services()[0].status == "active"


def _replica(client: HostClient, contract: str = "echo.v1") -> Any:
    return client._run(client.aio.request("GET", f"/v1/services/{contract}/replica"))["replica"]


def _call_until_served(echo: Any, text: str) -> EchoReply:
    deadline = time.monotonic() + 20
    while True:
        try:
            reply: EchoReply = echo.echo(EchoRequest(text))
        except ServiceUnavailableError:
            assert time.monotonic() < deadline, "the service never came back"
            time.sleep(0.1)
        else:
            return reply


def test_a_replicated_mesh_service_goes_on_from_the_newest_copy_of_its_state(
    start_host: Callable[..., RunningHost], tmp_path: Path
) -> None:
    config = _launch(tmp_path, BARE + 'scope = "mesh"\nreplicate = true\n')
    fast = ("--config", str(config), "--gossip-interval", "0.1", "--offline-after", "1")
    env = host_env(env_without_key())
    first = start_host(*fast, env=env)
    second = start_host(*fast, "--peer", first.url, env=env)
    with HostClient(second.url) as client:
        deadline = time.monotonic() + 15
        while len(client.services(mesh=True)) < 2:
            assert time.monotonic() < deadline, "the hosts never saw each other"
            time.sleep(0.05)
        echo = client.service(ECHO)
        assert [echo.echo(EchoRequest(t)).calls for t in "abc"] == [1, 2, 3]
        assert client.services()[0].status == "advertised", "it runs on the first host"
        deadline = time.monotonic() + 10
        while (_replica(client) or {}).get("state", {}).get("calls") != 3:
            assert time.monotonic() < deadline, "no copy of the state after the calls"
            time.sleep(0.05)
        assert _replica(client)["origin"] == first.name

        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
        assert _call_until_served(echo, "d").calls == 4, "went on from the copy"
        assert client.services()[0].status == "active", "now on the second host"
        assert echo.echo(EchoRequest("e")).calls == 5

        back = start_host(*fast, "--peer", second.url, env=env, name=first.name)
        deadline = time.monotonic() + 15
        while not all(h.online for h in client.hosts()):
            assert time.monotonic() < deadline, "the first host never came back"
            time.sleep(0.05)
        with HostClient(back.url) as first_client:
            again = first_client.service(ECHO)
            deadline = time.monotonic() + 15
            while len(first_client.services(mesh=True)) < 2:
                assert time.monotonic() < deadline, "the first host never saw the second"
                time.sleep(0.05)
            reply = again.echo(EchoRequest("f"))
            assert reply.calls == 6, "the first host took the second's state, not its own"
            assert first_client.services()[0].status == "active"
        assert echo.echo(EchoRequest("g")).calls == 7, "forwarded to the first host again"


async def test_only_the_host_sends_service_kinds_and_replicas_go_to_replicated_services(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    host = await make_host(services=[_echo()])
    async with AsyncHostClient(host.url) as client:
        assert (await client.service(ECHO).echo(EchoRequest("x"))).calls == 1
        service = client.proxy("service.echo")
        for kind in ("service.restore", "service.call"):
            with pytest.raises(RequestError, match=f"message kind '{kind}' is the host's own"):
                await service.send(kind, {"state": {"calls": 99}})
        assert (await client.service(ECHO).count(CountRequest())).calls == 1, "untouched"
        path = "/v1/services/echo.v1/replica"
        copy = {"version": 5, "state": {"calls": 99}, "origin": "mallory"}
        with pytest.raises(ServiceNotFoundError, match=r"serves no replicated echo\.v1"):
            await client.request("PUT", path, copy)
        with pytest.raises(ServiceNotFoundError, match=r"serves no replicated echo\.v1"):
            await client.request("GET", path)
        with pytest.raises(RequestError, match="version is an integer"):
            await client.request("PUT", path, {**copy, "version": -1})


def _replicas(directory: Path) -> Replicas:
    nothing: Any = None  # load and save touch no host part
    return Replicas("a", directory, supervisor=nothing, mesh=nothing, calls=nothing, ensure=nothing)


def test_replica_files_are_read_back_and_a_bad_one_is_ignored(tmp_path: Path) -> None:
    kept = _replicas(tmp_path)
    kept.held["echo.v1"] = Replica(5, {"calls": 3}, "b")
    kept.mine["echo.v1"] = 4
    kept._save("echo.v1")
    again = _replicas(tmp_path)
    again.load(["echo.v1", "other.v1"])
    assert again.held == {"echo.v1": Replica(5, {"calls": 3}, "b")}
    assert again.mine == {"echo.v1": 4}
    assert again._next_version() > 5, "versions go on above those seen"
    for bad in ("[1]", '{"held": {"version": -1, "state": {}, "origin": "b"}, "mine": 1}', "{"):
        (tmp_path / "echo.v1.json").write_text(bad)
        ignored = _replicas(tmp_path)
        ignored.load(["echo.v1"])
        assert (ignored.held, ignored.mine) == ({}, {}), bad
