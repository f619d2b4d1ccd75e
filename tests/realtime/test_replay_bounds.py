"""A resume is bounded (REPLAY_MAX_EVENTS, REPLAY_MAX_BYTES): a larger gap is answered
`recovered: false` at once, without the data of more than a short gap's events being read
(REPLAY_ONE_READ), and nothing old is sent; a short gap costs two queries; the
replay is read off the thread every handshake queries on, and sent as the client drains it."""

from __future__ import annotations

import asyncio
import threading

import pytest
from channels.db import database_sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from core import events, replays
from core.events import events_record, log_epoch, log_replay
from core.models import SessionEvent
from tests import factories
from tests.sockets import make_socket

pytestmark = pytest.mark.django_db(transaction=True)
KILOBYTE_OF_TEXT = "x" * 1000


@database_sync_to_async
def login_new_user():
    user = factories.make_user()
    return factories.login(APIClient(), user)


@database_sync_to_async
def publish(session_id, n: int, text: str = "") -> None:
    events_record(factories.event_numbered(session_id, i, text) for i in range(n))


async def resume(token: str, since: int, epoch: str):
    sock = await make_socket(token, query=f"since={since}&epoch={epoch}").open()
    ready = await sock.receive()
    assert ready["type"] == "session.ready", ready
    return sock, ready


def test_a_short_gap_is_replayed_in_two_queries(settings, django_assert_num_queries):
    """The common resume (after a restart, a few events missed): the epoch and the position
    in one query, the missed events with their sizes in another. A burst of resumes queues
    on the replay's few threads, so every round trip counts (bench/README.md)."""
    session = factories.make_session(factories.make_user())
    events_record(factories.event_numbered(session.pk, i, KILOBYTE_OF_TEXT) for i in range(5))
    epoch = log_epoch()
    with django_assert_num_queries(2):
        replay = log_replay(session_id=session.pk, since=2, epoch=epoch)
    assert replay.recovered is True and [e.seq for e in replay.events] == [3, 4, 5]
    with django_assert_num_queries(1):  # nothing missed: the position alone says so
        replay = log_replay(session_id=session.pk, since=5, epoch=epoch)
    assert (replay.recovered, replay.events, replay.seq) == (True, [], 5)
    settings.SYMPHAINY = {**settings.SYMPHAINY, "REPLAY_MAX_BYTES": 2000}
    assert log_replay(session_id=session.pk, since=2, epoch=epoch).recovered is False  # over the bytes


def _event_reads(queries) -> list[str]:
    table = connection.ops.quote_name(SessionEvent._meta.db_table)
    return [q["sql"] for q in queries if f"FROM {table}" in q["sql"]]


async def test_a_gap_over_the_event_bound_is_not_recovered_and_nothing_old_is_sent(settings):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "REPLAY_MAX_EVENTS": 3}
    body = await login_new_user()
    await publish(body["session_id"], 4)
    epoch = await database_sync_to_async(log_epoch)()
    sock, ready = await resume(body["access_token"], 0, epoch)
    assert ready["recovered"] is False and ready["seq"] == 4
    assert await sock.nothing(0.3)
    # Three missed events are within the bound.
    sock2, ready2 = await resume(body["access_token"], 1, epoch)
    assert ready2["recovered"] is True
    assert [(await sock2.receive())["seq"] for _ in range(3)] == [2, 3, 4]


async def test_a_gap_over_the_byte_bound_is_not_recovered_and_nothing_old_is_sent(settings):
    # Three events of ~1,100 bytes of frame each: two fit in 2,500 bytes, three do not.
    settings.SYMPHAINY = {**settings.SYMPHAINY, "REPLAY_MAX_BYTES": 2500}
    body = await login_new_user()
    await publish(body["session_id"], 3, KILOBYTE_OF_TEXT)
    epoch = await database_sync_to_async(log_epoch)()
    sock, ready = await resume(body["access_token"], 0, epoch)
    assert ready["recovered"] is False and ready["seq"] == 3
    assert await sock.nothing(0.3)
    sock2, ready2 = await resume(body["access_token"], 1, epoch)
    assert ready2["recovered"] is True
    assert [(await sock2.receive())["seq"] for _ in range(2)] == [2, 3]


def test_an_unrecoverable_gap_is_judged_before_any_event_is_read(settings, monkeypatch):
    # A gap longer than what is read in one query (REPLAY_ONE_READ) has its sizes read first.
    monkeypatch.setattr(events, "REPLAY_ONE_READ", 2)
    user = factories.make_user()
    session = factories.make_session(user)
    events_record(factories.event_numbered(session.pk, i, KILOBYTE_OF_TEXT) for i in range(5))
    epoch = log_epoch()

    settings.SYMPHAINY = {**settings.SYMPHAINY, "REPLAY_MAX_EVENTS": 4}
    with CaptureQueriesContext(connection) as queries:
        assert log_replay(session_id=session.pk, since=0, epoch=epoch).recovered is False
    assert _event_reads(queries) == []  # the positions alone tell the gap's size

    settings.SYMPHAINY = {**settings.SYMPHAINY, "REPLAY_MAX_EVENTS": 1000, "REPLAY_MAX_BYTES": 4000}
    with CaptureQueriesContext(connection) as queries:
        assert log_replay(session_id=session.pk, since=0, epoch=epoch).recovered is False
    # One read of the sizes, measured by the database; no event's data crossed over.
    [sizes] = _event_reads(queries)
    assert "length(" in sizes.lower()

    with CaptureQueriesContext(connection) as queries:
        replay = log_replay(session_id=session.pk, since=2, epoch=epoch)
    assert replay.recovered is True and [e.seq for e in replay.events] == [3, 4, 5]
    assert replay.events[0].data["text"] == KILOBYTE_OF_TEXT


async def test_the_replay_is_read_off_the_handshakes_thread_and_closes_its_connection(monkeypatch):
    body = await login_new_user()
    await publish(body["session_id"], 2)
    epoch = await database_sync_to_async(log_epoch)()
    sensitive = await database_sync_to_async(threading.get_ident)()
    seen: list[tuple[int, bool]] = []
    read = replays.log_replays

    def spy(requests):
        try:
            return read(requests)
        finally:
            seen.append((threading.get_ident(), connection.connection is not None))

    monkeypatch.setattr(replays, "log_replays", spy)
    sock, ready = await resume(body["access_token"], 0, epoch)
    assert ready["recovered"] is True
    [(thread, was_open)] = seen
    assert thread != sensitive and was_open
    # The reader's connection was closed after the read, not left to that thread.
    closed = await asyncio.get_running_loop().run_in_executor(
        replays._replays.executor, lambda: connection.connection is None
    )
    assert closed
