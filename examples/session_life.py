"""A session's life, end to end: log in, write session state, open the socket, run a
`batch` intent and watch its progress, talk to the agent, log out and see the socket close.

    .venv/bin/python examples/session_life.py            # against `make run` on :8000

Every step prints what it sent and the essentials of what came back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import urllib.error
import urllib.request
import uuid
from typing import Any

import websockets


class Api:
    def __init__(self, base_url: str) -> None:
        self.base_url, self.token = base_url, ""

    def call(self, method: str, path: str, body: Any = None, **headers: str) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.base_url + path, method=method, data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {self.token}"} if self.token else {}),
                     **headers},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as error:
            raw = error.read()
            return error.code, json.loads(raw) if raw else None


def show(step: str, status: int, body: Any, keys: tuple[str, ...] = ()) -> None:
    shown = {k: body[k] for k in keys if isinstance(body, dict) and k in body} if keys else body
    print(f"{step:<34} {status}  {json.dumps(shown) if shown is not None else ''}")


async def life(base_url: str, email: str, password: str) -> None:
    api = Api(base_url)
    status, login = api.call("POST", "/api/auth/login", {"email": email, "password": password})
    show("POST /api/auth/login", status, login, ("session_id", "tenant_id", "roles", "expires_in"))
    api.token = login["access_token"]
    sid = login["session_id"]

    status, state = api.call("GET", f"/api/session/{sid}/state")
    show("GET  state", status, state)
    status, state = api.call("PUT", f"/api/session/{sid}/state", {"data": {"cart": ["tea"], "step": 1}}, **{"If-Match": str(state["version"])})
    show("PUT  state (If-Match: 0)", status, state)
    status, stale = api.call("PATCH", f"/api/session/{sid}/state", {"data": {"step": 2}}, **{"If-Match": "0"})
    show("PATCH state (If-Match: 0, stale)", status, stale, ("error",))
    status, state = api.call("PATCH", f"/api/session/{sid}/state", {"data": {"step": 2}}, **{"If-Match": str(state["version"])})
    show("PATCH state (If-Match: 1)", status, state)

    url = base_url.replace("http", "ws", 1) + "/api/runtime/agent"
    async with websockets.connect(url, subprotocols=["symphainy.v1", f"bearer.{api.token}"], origin=base_url) as ws:
        ready = json.loads(await ws.recv())
        print(f"{'socket':<34} {ws.subprotocol}  first frame: {ready['type']}")

        await ws.send(json.dumps({"type": "intent.submit", "intent_type": "batch",
                                  "parameters": {"items": ["a", "b", "c", "d"]}, "idempotency_key": f"demo-{uuid.uuid4()}"}))
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "error":
                raise SystemExit(f"refused: {frame}")
            if frame["type"] == "intent.accepted":
                print(f"{'> intent.submit batch':<34} intent.accepted {frame['execution_id']}")
            elif frame["type"] == "runtime_event" and frame["event_type"].startswith("execution."):
                data = frame["data"]
                print(f"{'  < ' + frame['event_type']:<34} {data['status']} {json.dumps(data['progress'])}")
                if data["status"] in {"completed", "failed", "cancelled"}:
                    print(f"{'    result':<34} {json.dumps(data['result'])}")
                    break

        await ws.send(json.dumps({"type": "agent.message", "payload": {"text": "hello from the demo"}}))
        tokens = []
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("event_type") == "agent.token":
                tokens.append(frame["data"]["token"])
            elif frame.get("event_type") == "agent.completed":
                print(f"{'> agent.message':<34} {len(tokens)} agent.token frames: {tokens}")
                break

        status, _ = api.call("POST", "/api/auth/logout")
        show("POST /api/auth/logout", status, None)
        try:
            while True:
                await ws.recv()
        except websockets.ConnectionClosed as closed:
            print(f"{'socket closed':<34} {closed.rcvd.code} {closed.rcvd.reason}")
    status, gone = api.call("GET", "/api/auth/me")
    show("GET  /api/auth/me (old token)", status, gone, ("error",))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--email", default="demo@symphainy.local")
    parser.add_argument("--password", default="symphainy-demo-pass")
    args = parser.parse_args()
    asyncio.run(life(args.url.rstrip("/"), args.email, args.password))


if __name__ == "__main__":
    main()
