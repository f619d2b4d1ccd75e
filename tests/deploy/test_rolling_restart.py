"""A rolling restart of the deploy layout (docs/deployment.md#restarts-and-deploys): the two
daphne processes behind nginx are restarted one at a time, the next once the previous is
ready again, while clients are connected and a session's state is being written through
gunicorn. Every client is closed with 1012 (never dropped), comes back through nginx with no
handshake refused, resumes, and has received every event of the session exactly once."""

from __future__ import annotations

import asyncio
import json
import random
import threading

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from core.models import SessionEvent
from tests import factories
from tests.deploy.test_layout import call, layout
from tests.sockets import connect_ready
from tests.waiting import wait_until_async

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]
CLIENTS = 6


class Client:
    """One socket through nginx that reconnects as the browser client does (full jitter)
    and resumes with since/epoch; it records every event position and every close."""

    def __init__(self, site, token: str) -> None:
        self.site, self.token = site, token
        self.seqs: list[int] = []
        self.closes: list[int | None] = []
        self.refused: list[str] = []
        self.recovered: list[bool] = []
        self.position: tuple[int, str] | None = None
        self.stopping = False

    async def run(self) -> None:
        attempt = 0
        while not self.stopping:
            query = "" if self.position is None else f"since={self.position[0]}&epoch={self.position[1]}"
            try:
                ws, ready = await connect_ready(self.site, self.token, query=query)
            except (InvalidStatus, OSError, ConnectionClosed) as refused:
                self.refused.append(repr(refused))
                await asyncio.sleep(random.random() * min(5.0, 0.25 * 2**attempt))
                attempt += 1
                continue
            attempt = 0
            if self.position is not None:
                self.recovered.append(ready.get("recovered"))
            self.position = self.position or (ready["seq"], ready["epoch"])
            try:
                while True:
                    frame = json.loads(await ws.recv())
                    if "seq" in frame:
                        self.seqs.append(frame["seq"])
                        self.position = (frame["seq"], frame["epoch"])
            except ConnectionClosed as closed:
                self.closes.append(closed.rcvd.code if closed.rcvd is not None else None)
            if not self.stopping:
                await asyncio.sleep(random.random() * 0.5)  # 1012: back after a short random delay

    async def stop(self) -> None:
        self.stopping = True


def test_a_rolling_restart_behind_nginx_loses_no_event_and_refuses_no_handshake(tmp_path):
    with layout(tmp_path, SHUTDOWN_DRAIN_WINDOW_SECONDS="1", SHUTDOWN_TIMEOUT_SECONDS="5") as site:
        user = factories.make_user()
        status, body, _ = call(site.http, "POST", "/api/auth/login", {"email": user.email, "password": factories.PASSWORD})
        assert status == 200, body
        token, session_id = body["access_token"], body["session_id"]
        writing = threading.Event()
        writes: list[int] = []

        def writer() -> None:
            """State changes through gunicorn, one after another, for as long as the restart lasts."""
            version = 0
            while writing.is_set():
                status, state, _ = call(site.http, "PUT", f"/api/session/{session_id}/state",
                                        {"data": {"n": version}}, token, {"If-Match": str(version)})
                assert status == 200, state
                version = state["version"]
                writes.append(version)

        async def scenario() -> list[Client]:
            clients = [Client(site, token) for _ in range(CLIENTS)]
            tasks = [asyncio.ensure_future(client.run()) for client in clients]
            await wait_until_async(lambda: all(client.position for client in clients), timeout=20,
                                   message="every client connected")
            writing.set()
            thread = threading.Thread(target=writer)
            thread.start()
            try:
                await wait_until_async(lambda: len(writes) >= 5, timeout=20, message="writes before the restart")
                for index in (0, 1):
                    assert await asyncio.to_thread(site.restart_daphne, index) == 0
                await wait_until_async(lambda: len(writes) >= 10 + 5, timeout=20, message="writes after the restart")
            finally:
                writing.clear()
                await asyncio.to_thread(thread.join, 30)
            last = await asyncio.to_thread(
                lambda: SessionEvent.objects.filter(session_id=session_id).order_by("-seq").values_list("seq", flat=True)[0]
            )
            await wait_until_async(lambda: all(client.position and client.position[0] >= last for client in clients),
                                   timeout=20, message=lambda: f"every client caught up with {last}: " + "; ".join(
                                       f"{c.position} closes={c.closes} refused={c.refused[-2:]}" for c in clients))
            for client in clients:
                await client.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return clients, last

        clients, last = asyncio.run(scenario())
        for client in clients:
            first = client.seqs[0]
            assert client.seqs == list(range(first, last + 1)), "an event lost or repeated"
            assert client.closes and set(client.closes) == {1012}, client.closes  # never dropped
            assert client.refused == [], client.refused
            assert client.recovered and all(client.recovered), client.recovered
