"""A minimal client: log in over HTTP, open the runtime socket with the subprotocol form,
ping, print what arrives, and exit; with `--listen`, stay and print events, reconnecting as
the contract asks (docs/protocol.md#close-codes).

    .venv/bin/python examples/client.py --email demo@symphainy.local --password symphainy-demo-pass
    .venv/bin/python examples/client.py --listen      # until Ctrl-C, across server restarts

The token travels in the `Sec-WebSocket-Protocol` header (`bearer.<token>`), never in the
URL; the server answers with `symphainy.v1`. An Origin is required, as a browser sends
it: the server's own (scheme, host and port, the host one of ALLOWED_HOSTS) or one of
CORS_ALLOWED_ORIGINS. This client sends the base URL's, its own page's as it were.

Reconnecting: after 1006 (a drop), 1011, 1012 (the server is restarting) and 1013 the
client waits a random delay from 0 to 0.5 s · 2^attempt (at most 30 s: "full jitter"; at
least half of 5 s after 4429 and 1013), then reopens with `?since=&epoch=`: the server
replays what was missed, or says `recovered: false` and the client re-reads the state.
A draining server sends `server.restart` before its 1012, with `reconnect_after_ms`: the
client then waits that long instead (the server has spread its closes already).
After 4401 it refreshes its tokens once and reconnects; it stops after 4404 and 4409.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import urllib.error
import urllib.parse
import urllib.request

import websockets

INITIAL_S, MAX_S, FACTOR, SLOW_DOWN_S = 0.5, 30.0, 2, 5.0
SLOW_DOWN = {1013, 4429}
FINAL = {4404: "the session is gone", 4409: "the session has ended: log in again"}


def post(base_url: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(
        f"{base_url}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def get(base_url: str, path: str, token: str) -> dict:
    request = urllib.request.Request(f"{base_url}{path}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def login(base_url: str, email: str, password: str) -> dict:
    return post(base_url, "/api/auth/login", {"email": email, "password": password})


def backoff_delay(code: int, attempt: int) -> float:
    """Full jitter, bounded; a longer pause, half of it kept, when the server asks to slow down."""
    base = min(MAX_S, INITIAL_S * FACTOR**attempt)
    if code in SLOW_DOWN:
        base = max(base, SLOW_DOWN_S)
        return base / 2 + random.random() * base / 2
    return random.random() * base


class Client:
    def __init__(self, base_url: str, tokens: dict) -> None:
        self.base_url = base_url
        self.tokens = tokens
        self.session_id = tokens["session_id"]
        self.position: tuple[int, str] | None = None  # (seq, epoch) of the last event seen
        self.hint: float | None = None  # a server.restart's reconnect_after_ms, in seconds

    def url(self) -> str:
        query = {"session_id": self.session_id}
        if self.position is not None:
            query.update(since=str(self.position[0]), epoch=self.position[1])
        return self.base_url.replace("http", "ws", 1) + "/api/runtime/agent?" + urllib.parse.urlencode(query)

    def seen(self, frame: dict) -> None:
        if frame.get("type") == "session.ready" or "seq" in frame:
            self.position = (int(frame["seq"]), str(frame["epoch"]))
        elif frame.get("type") == "server.restart":
            # Bounded as any delay: a hint is advice, not a reason to wait for ever.
            self.hint = min(MAX_S, max(0.0, float(frame.get("reconnect_after_ms") or 0) / 1000))

    async def session(self, pings: int, listen: bool) -> None:
        """One socket: session.ready, the pings, then (listening) every frame until it closes."""
        async with websockets.connect(
            self.url(), subprotocols=["symphainy.v1", f"bearer.{self.tokens['access_token']}"], origin=self.base_url
        ) as socket:
            ready = json.loads(await socket.recv())
            print("<", json.dumps(ready), flush=True)
            if ready.get("recovered") is False:
                # The missed events are gone: re-read the state instead of living with a gap.
                state = await asyncio.to_thread(get, self.base_url, f"/api/session/{self.session_id}/state",
                                                self.tokens["access_token"])
                print(f"re-read the state (version {state.get('version')})", flush=True)
            self.seen(ready)
            for _ in range(pings):
                await socket.send(json.dumps({"type": "ping"}))
                print("<", await socket.recv(), flush=True)
            while listen:
                frame = json.loads(await socket.recv())
                self.seen(frame)
                print("<", json.dumps(frame), flush=True)

    async def run(self, pings: int, listen: bool) -> None:
        attempt, refreshed = 0, False
        while True:
            before = self.position
            try:
                await self.session(pings, listen)
                return
            except websockets.ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd is not None else 1006
            except (OSError, websockets.InvalidHandshake, asyncio.TimeoutError):
                if self.position is None and not listen:
                    raise  # never reached: say so and stop
                code = 1006  # refused or unreachable: the server is (re)starting
            if self.position is not before:  # a session.ready came: start counting again
                attempt, refreshed = 0, False
            if code in FINAL:
                sys.exit(f"closed {code}: {FINAL[code]}")
            if code == 4401:
                if refreshed:
                    sys.exit("closed 4401 again after a refresh: log in again")
                self.tokens = {**self.tokens, **await asyncio.to_thread(
                    post, self.base_url, "/api/auth/refresh", {"refresh_token": self.tokens["refresh_token"]})}
                refreshed = True
                print("closed 4401: tokens refreshed, reconnecting", flush=True)
                continue
            hint, self.hint = self.hint, None
            if code == 1012 and hint is not None:
                delay, why = hint, " (the server's hint)"
            else:
                delay, why = backoff_delay(code, attempt), ""
            attempt += 1
            print(f"closed {code}: reconnecting in {delay:.2f} s{why}", flush=True)
            await asyncio.sleep(delay)


async def run(base_url: str, email: str, password: str, pings: int, listen: bool) -> None:
    body = login(base_url, email, password)
    print(f"logged in: session {body['session_id']} in tenant {body['tenant_id']}", flush=True)
    await Client(base_url, body).run(pings, listen)
    print("socket closed; done")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--email", default="demo@symphainy.local")
    parser.add_argument("--password", default="symphainy-demo-pass")
    parser.add_argument("--pings", type=int, default=1)
    parser.add_argument("--listen", action="store_true", help="stay, print events and reconnect until Ctrl-C")
    args = parser.parse_args()
    try:
        asyncio.run(run(args.url.rstrip("/"), args.email, args.password, args.pings, args.listen))
    except KeyboardInterrupt:
        pass
    except urllib.error.HTTPError as error:
        sys.exit(f"{args.url}: HTTP {error.code}: {error.read().decode(errors='replace')[:200]}")
    except OSError as error:
        # urllib.error.URLError is an OSError: the server is down or unreachable.
        sys.exit(f"cannot reach the server at {args.url}: {getattr(error, 'reason', error)}")


if __name__ == "__main__":
    main()
