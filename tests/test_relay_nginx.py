"""The relay behind a real nginx terminating TLS at /paglets/ (the docs' drop-in), and native TLS.

nginx is Debian's package, which ``./run test`` installs as root (as CI runs it);
the hub's certificate comes from a test CA (trustme) that the hub, the
connect-mode hosts (``--ca-file``) and the test's client trust.
"""

from __future__ import annotations

import json
import ssl
import urllib.request
from typing import TYPE_CHECKING, Any

import pytest

from paglets import HostClient
from tests.hostproc import free_port
from tests.nginxproc import Nginx, nginx_binary
from tests.relayproc import KEY, Relay
from tests.test_relay import COUNTER, tour, wait_online

if TYPE_CHECKING:
    from pathlib import Path


def diagnostics(url: str, ca: Path) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=str(ca))
    request = urllib.request.Request(  # noqa: S310 - a test URL
        f"{url}/v1/relay/diagnostics", headers={"Authorization": f"Bearer {KEY}"}
    )
    with urllib.request.urlopen(request, timeout=10, context=context) as response:  # noqa: S310
        data: dict[str, Any] = json.loads(response.read())
    return {c["name"]: c for c in data["clients"]}


def exercise(public: str, relay: Relay, ca: Path, expected: str) -> None:
    """Two connect-mode hosts (transport auto) through ``public``: messages and 16 MiB moves."""
    trust = ("--ca-file", str(ca))
    b_url = relay.connect("b", *trust, to=public)
    relay.connect("c", *trust, to=public)
    assert b_url == f"{public}/v1/relay/hosts/b"
    context = ssl.create_default_context(cafile=str(ca))
    with HostClient(public, KEY, ssl=context) as client:
        wait_online(client, {"hub", "b", "c"})
        with client.at("b") as b:
            counter = b.create(COUNTER)
            assert [counter.send("increment")["count"] for _ in range(3)] == [1, 2, 3]
        tour(client, "b", ["hub", "b", "c", "b"])
        tour(client, "hub", ["c", "hub"])
    seen = diagnostics(public, ca)
    assert {seen["b"]["transport"], seen["c"]["transport"]} == {expected}


@pytest.mark.parametrize(
    ("upgrades", "expected"), [(True, "websocket"), (False, "long-poll")], ids=["ws", "no-ws"]
)
def test_through_nginx_with_tls_at_a_prefix(
    relay: Relay, pki: dict[str, Path], tmp_path: Path, *, upgrades: bool, expected: str
) -> None:
    nginx_binary()
    nginx_dir = tmp_path / "nginx"
    nginx_dir.mkdir()
    proxy = Nginx(
        nginx_dir,
        port=free_port(),
        hub_port=relay.port,
        cert=pki["cert"],
        key=pki["key"],
        upgrades=upgrades,
    )
    try:
        relay.hub("--ca-file", str(pki["ca"]), public=proxy.url)
        exercise(proxy.url, relay, pki["ca"], expected)
    finally:
        proxy.close()


def test_a_hub_with_native_tls(relay: Relay, pki: dict[str, Path]) -> None:
    public = f"https://127.0.0.1:{relay.port}"
    tls = ("--tls-cert", str(pki["cert"]), "--tls-key", str(pki["key"]))
    relay.hub(*tls, "--ca-file", str(pki["ca"]), public=public)
    exercise(public, relay, pki["ca"], "websocket")
