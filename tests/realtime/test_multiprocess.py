"""Two daphne processes sharing PostgreSQL and Redis: an end on one reaches sockets on the
other, and the timer re-check closes a socket whose end event never came."""

from __future__ import annotations

import asyncio
import time

from django.db import connection

from sessions_runtime.models import RuntimeSession, SessionStatus
from tests.conftest import services_server_marks
from tests.live import running
from tests.sockets import close_code, connect_ready, refusal_code

pytestmark = services_server_marks()


def test_an_end_on_process_a_closes_sockets_on_process_b_within_a_second(tmp_path):
    with running(tmp_path) as a, running(tmp_path) as b:
        body = a.login()
        token = body["access_token"]

        async def scenario():
            on_b = [(await connect_ready(b, token))[0] for _ in range(3)]
            on_a, _ = await connect_ready(a, token)
            started = time.monotonic()
            status, _ = await asyncio.to_thread(a.request, "DELETE", f"/api/session/{body['session_id']}", None, token)
            assert status == 204
            codes = await asyncio.gather(*(close_code(ws) for ws in on_b + [on_a]))
            elapsed = time.monotonic() - started
            assert codes == [4409] * 4
            assert elapsed < 1.5, elapsed
            # And the other process refuses the ended session at once (its cache was dropped).
            assert await refusal_code(b, token) == 4409

        asyncio.run(scenario())


def end_behind_the_services_back(session_id: str) -> None:
    """In a worker thread, whose database connection is closed before it returns (or
    PostgreSQL would refuse to drop the test database while it lingers)."""
    try:
        RuntimeSession.objects.filter(pk=session_id).update(status=SessionStatus.ENDED)
    finally:
        connection.close()


def test_the_recheck_closes_a_socket_whose_end_event_was_lost(tmp_path):
    with running(tmp_path, WS_RECHECK_INTERVAL_SECONDS="1") as server:
        body = server.login()

        async def scenario():
            ws, _ = await connect_ready(server, body["access_token"])
            # Ended behind the service's back: no end event is ever recorded.
            await asyncio.to_thread(end_behind_the_services_back, body["session_id"])
            started = time.monotonic()
            assert await close_code(ws) == 4409
            assert time.monotonic() - started < 3

        asyncio.run(scenario())
