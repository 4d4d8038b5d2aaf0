"""The ``/v1`` HTTP API with nothing but the standard library.

Any language can drive a host: JSON in, JSON out, errors as
``{"error": {"type", "message", "traceback"}}`` with a status code per type.
"""

import asyncio
import json
import tempfile
import urllib.error
import urllib.request

from paglets import Host


def call(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
    request.add_header("Content-Type", "application/json")
    # With an API key: request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def main() -> None:
    with tempfile.TemporaryDirectory() as state_dir:
        async with Host(name="http", state_dir=state_dir) as host:
            base = host.url

            async def show(method: str, path: str, body: dict | None = None) -> dict:
                status, reply = await asyncio.to_thread(call, method, base + path, body)
                reply.get("error", {}).pop("traceback", None)  # long; printed elsewhere
                print(f"{method} {path} -> {status} {json.dumps(reply)[:100]}")
                return reply

            await show("GET", "/health")
            await show("GET", "/v1/host")
            info = await show("POST", "/v1/paglets", {"class_path": "examples.counter:Counter"})
            paglet = f"/v1/paglets/{info['agent_id']}"
            await show("POST", f"{paglet}/messages", {"kind": "increment", "args": {"by": 2}})
            accepted = await show(
                "POST", f"{paglet}/messages", {"kind": "get", "args": {}, "mode": "future"}
            )
            await show("GET", f"{paglet}/messages/{accepted['message_id']}?wait=10")
            await show("GET", f"{paglet}/state")
            await show("POST", f"{paglet}/messages", {"kind": "reset", "args": {}})
            await show("DELETE", paglet)
            await show("GET", f"{paglet}/state")
            await show("GET", "/v1/events?since=0&limit=3")


if __name__ == "__main__":
    asyncio.run(main())
