"""Resumes are read in batches (core/replays.py): a batch answers every request as
`log_replay` answers it alone, costs a few queries whatever its size, and the requests
that arrive together (a restart's reconnect storm) go in few batches, off the handshakes'
thread."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest
from channels.db import database_sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core import events, replays
from core.events import events_record, log_epoch, log_replay
from core.models import SessionEvent
from core.replays import log_replay_read, log_replays
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)
TEXT = "x" * 1000


def _sessions():
    """Three sessions: 8 events, 3 events with the 2nd pruned, none."""
    user = factories.make_user()
    full, holed, empty = (factories.make_session(user) for _ in range(3))
    events_record(factories.event_numbered(full.pk, i, TEXT if i == 7 else "") for i in range(8))
    events_record(factories.event_numbered(holed.pk, i) for i in range(3))
    SessionEvent.objects.filter(session_id=holed.pk, seq=2).delete()
    return full.pk, holed.pk, empty.pk


def _requests(full, holed, empty, epoch):
    return [
        (full, None, None), (full, 8, epoch), (full, 5, epoch), (full, 7, epoch), (full, 5, epoch),
        (full, 0, epoch), (full, 9, epoch), (full, -1, epoch), (full, 3, "another-epoch"),
        (holed, 0, epoch), (holed, 2, epoch), (holed, 3, epoch),
        (empty, 0, epoch), (empty, None, None), (uuid.uuid4(), 0, epoch), (uuid.uuid4(), 4, epoch),
    ]


@pytest.mark.parametrize("one_read", [100, 2])
def test_a_batch_answers_each_request_as_a_replay_alone(settings, monkeypatch, one_read):
    """Every case of `log_replay` (fresh, nothing missed, short and long gaps, pruned, over
    the bytes, past the end, another epoch, unknown session), several from one session."""
    monkeypatch.setattr(events, "REPLAY_ONE_READ", one_read)  # 2: the gaps over it take the long path
    settings.SYMPHAINY = {**settings.SYMPHAINY, "REPLAY_MAX_BYTES": 1500, "REPLAY_MAX_EVENTS": 7}
    full, holed, empty = _sessions()
    requests = _requests(full, holed, empty, log_epoch())
    alone = [log_replay(session_id=s, since=since, epoch=epoch) for s, since, epoch in requests]
    assert log_replays(requests) == alone
    recovered = [replay.recovered for replay in alone]
    assert recovered.count(True) >= 4 and recovered.count(False) >= 6  # the cases are all there


def test_a_batch_costs_four_queries_whatever_its_size(django_assert_num_queries):
    """The epoch, the positions, the short gaps' sizes, their events: not one or two round
    trips a socket."""
    user = factories.make_user()
    sessions = [factories.make_session(user).pk for _ in range(10)]
    for session_id in sessions:
        events_record(factories.event_numbered(session_id, i) for i in range(5))
    epoch = log_epoch()
    requests = [(session_id, since, epoch) for session_id in sessions for since in (1, 2, 3, 5)]
    with django_assert_num_queries(4):
        answers = log_replays(requests)
    assert [[e.seq for e in a.events] for a in answers[:4]] == [[2, 3, 4, 5], [3, 4, 5], [4, 5], []]
    assert all(a.recovered for a in answers)


async def test_resumes_that_arrive_together_are_read_in_few_batches_off_the_handshakes_thread(monkeypatch):
    user = await database_sync_to_async(factories.make_user)()
    sessions = [(await database_sync_to_async(factories.make_session)(user)).pk for _ in range(20)]
    for session_id in sessions:
        await database_sync_to_async(events_record)([factories.event_numbered(session_id, i) for i in range(3)])
    epoch = await database_sync_to_async(log_epoch)()
    sensitive = await database_sync_to_async(threading.get_ident)()
    batches: list[tuple[int, int]] = []
    read = replays.log_replays

    def spy(requests):
        batches.append((len(requests), threading.get_ident()))
        return read(requests)

    monkeypatch.setattr(replays, "log_replays", spy)
    requests = [(session_id, since, epoch) for session_id in sessions for since in (0, 1, 2, 3)]
    answers = await asyncio.gather(*(log_replay_read(session_id=s, since=since, epoch=e) for s, since, e in requests))
    alone = await database_sync_to_async(lambda: [log_replay(session_id=s, since=since, epoch=e) for s, since, e in requests])()
    assert answers == alone and all(a.recovered for a in answers) and alone[0].events
    assert sum(size for size, _ in batches) == 80
    assert len(batches) <= replays.REPLAY_READERS + 1  # the first ones alone, then the rest together
    assert sensitive not in {thread for _, thread in batches}


async def test_a_failed_batch_fails_its_requests_and_the_next_ones_are_read(monkeypatch):
    """A database error reaches each waiting handshake (refused as it would be alone); the
    queue is not left stuck."""
    user = await database_sync_to_async(factories.make_user)()
    session_id = (await database_sync_to_async(factories.make_session)(user)).pk
    epoch = await database_sync_to_async(log_epoch)()
    read = replays.log_replays
    failing = [True]

    def flaky(requests):
        if failing[0]:
            raise RuntimeError("the database went away")
        return read(requests)

    monkeypatch.setattr(replays, "log_replays", flaky)
    with pytest.raises(RuntimeError):
        await log_replay_read(session_id=session_id, since=0, epoch=epoch)
    failing[0] = False
    replay = await asyncio.wait_for(log_replay_read(session_id=session_id, since=0, epoch=epoch), 30)
    assert replay.recovered is True and replay.seq == 0


def test_events_are_read_only_for_gaps_within_the_budget_and_a_few_megabytes_a_query(settings, monkeypatch):
    """A gap over the bytes is judged on its sizes and its events are never read; the
    others' events are read in queries of at most READ_BYTES (a session's range whole)."""
    monkeypatch.setattr(replays, "READ_BYTES", 2500)
    settings.SYMPHAINY = {**settings.SYMPHAINY, "REPLAY_MAX_BYTES": 4000}
    user = factories.make_user()
    small_a, small_b, big = (factories.make_session(user).pk for _ in range(3))
    for session_id, count in ((small_a, 2), (small_b, 2), (big, 5)):
        events_record(factories.event_numbered(session_id, i, TEXT) for i in range(count))
    epoch = log_epoch()
    positions = {s: log_replay(session_id=s, since=None, epoch=None).seq for s in (small_a, small_b, big)}
    requests = [(s, positions[s] - (5 if s == big else 2), epoch) for s in (small_a, small_b, big)]
    table = connection.ops.quote_name(SessionEvent._meta.db_table)
    with CaptureQueriesContext(connection) as queries:
        answers = log_replays(requests)
    assert [a.recovered for a in answers] == [True, True, False]
    reads = [q["sql"] for q in queries if f"FROM {table}" in q["sql"] and "length(" not in q["sql"].lower()]
    assert len(reads) == 2  # one per small session: together they are over READ_BYTES
    assert all(str(big).replace("-", "") not in sql.replace("-", "") for sql in reads)
