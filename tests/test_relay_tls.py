"""Native TLS (``--tls-cert``/``--tls-key``, ``--ca-file``) and a hub's public URL with a prefix."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

import aiohttp
import pytest

from paglets import AsyncHostClient, ConfigurationError, HostClient, HostConfig, PagletError
from tests.conftest import wait_for
from tests.hostproc import env_without_key

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from paglets import Host
    from tests.hostproc import RunningHost

FAST = {"gossip_interval": 0.1, "offline_after": 1.0, "warm_children": 0}
KEY = "relay-test-key-0123456789"
TRAVELER = "examples.travel:Traveler"


async def test_hosts_serve_https_and_gossip_over_it_trusting_a_private_ca(
    make_host: Callable[..., Awaitable[Host]], pki: dict[str, Path]
) -> None:
    tls = {"tls_cert": pki["cert"], "tls_key": pki["key"], "ca_file": pki["ca"], "api_key": KEY}
    a = await make_host(name="a", **FAST, **tls)
    b = await make_host(name="b", peers=(a.url,), **FAST, **tls)
    assert a.url.startswith("https://127.0.0.1:")
    assert b.mesh.url.startswith("https://")
    await wait_for(
        lambda: all(len(h.mesh.hosts(online=True)) == 2 for h in (a, b)),
        15,
        "TLS mesh",
    )
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    async with AsyncHostClient(a.url, KEY, ssl=context) as client:
        traveler = await client.create(TRAVELER)
        assert await traveler.send("increment") == 1
        # a call from a to b goes over b's HTTPS, trusted through --ca-file
        names = {h.name for h in await client.sibling(b.url).hosts()}
        assert names == {"a", "b"}
    async with AsyncHostClient(a.url, KEY) as untrusting:  # the system's CAs only
        with pytest.raises(PagletError):
            await untrusting.host_info()
    plain = a.url.replace("https://", "http://")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"{plain}/health") as response:
                await response.read()


def test_the_daemon_serves_tls_and_clients_trust_paglets_ca_file(
    start_host: Callable[..., RunningHost], pki: dict[str, Path]
) -> None:
    env = env_without_key(PAGLETS_API_KEY=KEY)
    running = start_host("--tls-cert", str(pki["cert"]), "--tls-key", str(pki["key"]), env=env)
    assert running.url.startswith("https://127.0.0.1:")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PAGLETS_CA_FILE", str(pki["ca"]))
        with HostClient(running.url, KEY) as client:
            assert client.host_info().name == running.name


async def test_a_hub_hands_out_its_public_url_with_its_prefix(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    hub = await make_host(name="hub", public_url="https://hub.example/paglets/", api_key=KEY)
    async with AsyncHostClient(hub.url, KEY) as client:
        assert (await client.host_info()).url == "https://hub.example/paglets"
        records = await client.hosts()
        assert records[0].url == "https://hub.example/paglets"
        traveler = await client.create(TRAVELER)
        assert (await traveler.info()).host_url == "https://hub.example/paglets"


def test_relay_options_are_checked(pki: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="without an API key"):
        HostConfig(name="hub", public_url="https://hub.example/paglets")
    HostConfig(name="hub", public_url="https://hub.example/paglets", insecure=True)
    with pytest.raises(ConfigurationError, match="together"):
        HostConfig(name="a", tls_cert=pki["cert"])
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigurationError, match="cannot load the TLS certificate"):
        HostConfig(name="a", tls_cert=bad, tls_key=pki["key"]).server_ssl()
    with pytest.raises(ConfigurationError, match="cannot load the CA file"):
        HostConfig(name="a", ca_file=bad).client_ssl()
