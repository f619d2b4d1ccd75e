"""A minimal client: log in over HTTP, open the runtime socket with the subprotocol form,
ping, print what arrives, and exit.

    .venv/bin/python examples/client.py --email demo@symphainy.local --password symphainy-demo-pass

The token travels in the `Sec-WebSocket-Protocol` header (`bearer.<token>`), never in the
URL; the server answers with `symphainy.v1`. An Origin is required, as a browser sends
it: the server's own (scheme, host and port, the host one of ALLOWED_HOSTS) or one of
CORS_ALLOWED_ORIGINS. This client sends the base URL's, its own page's as it were.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.error
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
    print("socket closed; done")


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
    except urllib.error.HTTPError as error:
        sys.exit(f"{args.url}: HTTP {error.code}: {error.read().decode(errors='replace')[:200]}")
    except (OSError, websockets.WebSocketException) as error:
        # urllib.error.URLError is an OSError: the server is down or unreachable.
        sys.exit(f"cannot reach the server at {args.url}: {getattr(error, 'reason', error)}")


if __name__ == "__main__":
    main()
