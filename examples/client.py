"""A minimal client: log in over HTTP, then open the runtime socket with the subprotocol
form and print what arrives.

    .venv/bin/python examples/client.py --email demo@symphainy.local --password symphainy-demo-pass

The token travels in the `Sec-WebSocket-Protocol` header (`bearer.<token>`), never in the
URL; the server answers with `symphainy.v1`. An Origin from ALLOWED_HOSTS (or
WS_ALLOWED_ORIGINS) is required, as a browser would send.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import urllib.request

import websockets


def login(base_url: str, email: str, password: str) -> dict:
    request = urllib.request.Request(
        f"{base_url}/api/auth/login",
        data=json.dumps({"email": email, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


async def run(base_url: str, email: str, password: str, pings: int) -> None:
    body = login(base_url, email, password)
    print(f"logged in: session {body['session_id']} in tenant {body['tenant_id']}")
    ws_url = base_url.replace("http", "ws", 1) + "/api/runtime/agent"
    async with websockets.connect(
        ws_url, subprotocols=["symphainy.v1", f"bearer.{body['access_token']}"], origin=base_url
    ) as socket:
        print(f"subprotocol: {socket.subprotocol}")
        print("<", await socket.recv())
        for _ in range(pings):
            await socket.send(json.dumps({"type": "ping"}))
            print("<", await socket.recv())
        try:
            async for frame in socket:
                print("<", frame)
        except websockets.ConnectionClosed as closed:
            print(f"closed: {closed.rcvd.code if closed.rcvd else 'no close frame'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--email", default="demo@symphainy.local")
    parser.add_argument("--password", default="symphainy-demo-pass")
    parser.add_argument("--pings", type=int, default=1)
    args = parser.parse_args()
    try:
        asyncio.run(run(args.url.rstrip("/"), args.email, args.password, args.pings))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
