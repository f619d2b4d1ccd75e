"""The session event log through the full ASGI app: positions, resume, revocation and
access changes through the tail, the cache dropped by it, rollback, pruning."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.db import transaction
from django.utils import timezone

from accounts.models import Role
from accounts.services import membership_add
from core.caller import Caller
from core.events import Event, events_record, log_epoch, log_prune, log_replay, runtime_event_publish
from core.models import SessionEvent, SessionEventSequence
from realtime.sweeps import runtime_sweep
from sessions_runtime.models import EndReason, RuntimeSession
from sessions_runtime.services import session_end
from tests import factories
from tests.sockets import login_new_user, make_socket, open_ready
from tests.waiting import wait_until_async

pytestmark = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def publish(session_id, n: int = 1) -> None:
    events_record(factories.event_numbered(session_id, i) for i in range(n))


async def frames(sock, n: int, timeout: float = 5) -> list[dict]:
    return [await sock.receive(timeout) for _ in range(n)]


async def test_ready_and_frames_carry_positions_that_increase():
    _, body = await login_new_user()
    sock, ready = await open_ready(body["access_token"])
    assert ready["seq"] == 0 and ready["epoch"] and "recovered" not in ready
    await publish(body["session_id"], 3)
    got = await frames(sock, 3)
    assert [f["seq"] for f in got] == [1, 2, 3]
    assert {f["epoch"] for f in got} == {ready["epoch"]}
    assert [factories.event_number(f) for f in got] == [0, 1, 2]
    await sock.close()
    _, again = await open_ready(body["access_token"])
    assert again["seq"] == 3 and again["epoch"] == ready["epoch"]


async def test_a_fresh_socket_starts_from_the_position_the_check_read():
    """Events recorded before this process's tail started: the handshake's own query
    carries the position, and a later handshake answered from the cache keeps it."""
    _, body = await login_new_user()
    await publish(body["session_id"], 2)
    _, ready = await open_ready(body["access_token"])
    assert ready["seq"] == 2
    _, again = await open_ready(body["access_token"])  # from the snapshot
    assert again["seq"] == 2


async def test_a_reconnect_with_since_gets_what_it_missed_in_order_then_live_ones():
    _, body = await login_new_user()
    sock, ready = await open_ready(body["access_token"])
    await publish(body["session_id"], 2)
    seen = await frames(sock, 2)
    await sock.close()
    await publish(body["session_id"], 3)  # while disconnected
    last = seen[-1]["seq"]
    resumed, ready2 = await open_ready(body["access_token"], query=f"since={last}&epoch={ready['epoch']}")
    assert ready2["recovered"] is True and ready2["seq"] == 5
    missed = await frames(resumed, 3)
    assert [f["seq"] for f in missed] == [3, 4, 5]
    await publish(body["session_id"], 1)
    live = await resumed.receive()
    assert live["seq"] == 6
    assert await resumed.nothing(0.3)  # no duplicate of anything already sent


async def test_since_zero_replays_the_session_from_its_start():
    _, body = await login_new_user()
    await publish(body["session_id"], 2)
    epoch = await database_sync_to_async(log_epoch)()
    sock, ready = await open_ready(body["access_token"], query=f"since=0&epoch={epoch}")
    assert ready["recovered"] is True
    assert [f["seq"] for f in await frames(sock, 2)] == [1, 2]


@pytest.mark.parametrize("query", ["since=1&epoch=other", "since=99&epoch={epoch}", "since=-1&epoch={epoch}",
                                   "since=abc&epoch={epoch}", "since=1", "since=%C2%B2&epoch={epoch}",
                                   "since=1e3&epoch={epoch}", "since=&epoch={epoch}",
                                   "since=9999999999999999999999&epoch={epoch}"])
async def test_what_cannot_be_recovered_says_so_and_sends_nothing_old(query):
    _, body = await login_new_user()
    await publish(body["session_id"], 2)
    epoch = await database_sync_to_async(log_epoch)()
    sock, ready = await open_ready(body["access_token"], query=query.format(epoch=epoch))
    assert ready["recovered"] is False and ready["seq"] == 2 and ready["epoch"] == epoch
    assert await sock.nothing(0.3)


async def test_pruned_events_are_not_recovered(settings):
    _, body = await login_new_user()
    await publish(body["session_id"], 5)
    epoch = await database_sync_to_async(log_epoch)()
    settings.SYMPHAINY = {**settings.SYMPHAINY, "EVENT_RETENTION": timedelta(seconds=1), "EVENT_RETENTION_COUNT": 2}
    later = timezone.now() + timedelta(seconds=5)
    assert await database_sync_to_async(log_prune)(now=later) == 3
    sock, ready = await open_ready(body["access_token"], query=f"since=1&epoch={epoch}")
    assert ready["recovered"] is False
    # The last two are kept, so a client that saw the third resumes.
    sock2, ready2 = await open_ready(body["access_token"], query=f"since=3&epoch={epoch}")
    assert ready2["recovered"] is True and [f["seq"] for f in await frames(sock2, 2)] == [4, 5]


def test_progress_is_coalesced_on_replay_to_the_latest_per_execution():
    user = factories.make_user()
    session = factories.make_session(user)
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    for execution_id, n in ((a, 1), (b, 1), (a, 2), (b, 2), (a, 3)):
        runtime_event_publish(session.pk, "execution.progress", {"execution_id": execution_id, "n": n})
    runtime_event_publish(session.pk, "execution.completed", {"execution_id": a})
    replay = log_replay(session_id=session.pk, since=0, epoch=log_epoch())
    assert replay.recovered is True
    assert [(e.kind, e.data.get("n")) for e in replay.events] == [
        ("execution.progress", 2), ("execution.progress", 3), ("execution.completed", None)
    ]


def test_a_rolled_back_change_records_no_event_and_takes_no_position():
    user = factories.make_user()
    session = factories.make_session(user)
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            runtime_event_publish(session.pk, "session.state_changed", {})
            raise RuntimeError("roll back")
    assert not SessionEvent.objects.filter(session_id=session.pk).exists()
    runtime_event_publish(session.pk, "session.state_changed", {})
    assert list(SessionEvent.objects.filter(session_id=session.pk).values_list("seq", flat=True)) == [1]


def test_positions_are_per_session_and_without_holes_in_one_batch():
    user = factories.make_user()
    s1, s2 = factories.make_session(user), factories.make_session(user)
    events_record([Event(s1.pk, "x", {}), Event(s2.pk, "x", {}), Event(s1.pk, "x", {})])
    events_record([Event(s1.pk, "x", {})])
    assert list(SessionEvent.objects.filter(session_id=s1.pk).order_by("id").values_list("seq", flat=True)) == [1, 2, 3]
    assert list(SessionEvent.objects.filter(session_id=s2.pk).values_list("seq", flat=True)) == [1]
    assert SessionEventSequence.objects.get(pk=s1.pk).last_seq == 3


def test_the_sweep_prunes_ended_sessions_logs_and_reports_the_size(settings):
    from core.metrics import EVENT_LOG_ROWS

    user = factories.make_user()
    gone, alive = factories.make_session(user), factories.make_session(user)
    for session in (gone, alive):
        runtime_event_publish(session.pk, "session.state_changed", {})
    session_end(session_id=gone.pk, reason=EndReason.DELETED, caller=Caller.system())
    SessionEventSequence.objects.filter(pk=gone.pk).update(ended_at=timezone.now() - timedelta(hours=1))
    SessionEvent.objects.update(at=timezone.now() - timedelta(hours=1))
    report = runtime_sweep()
    assert report.events_pruned == 2  # the ended session's change and its end
    assert list(SessionEvent.objects.values_list("session_id", flat=True)) == [alive.pk]  # within the last 1,000
    assert list(SessionEventSequence.objects.values_list("session_id", flat=True)) == [alive.pk]
    assert EVENT_LOG_ROWS._value.get() == 1


# --- Revocation and access through the tail -------------------------------------------------
async def test_an_end_recorded_elsewhere_closes_the_socket_through_the_log_alone(monkeypatch):
    """As a `manage.py` process would: the row is written and nothing else happens in this
    process (no cache drop, no wake-up); the tail's poll finds it."""
    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    session_id = uuid.UUID(body["session_id"])

    @database_sync_to_async
    def end_elsewhere():
        RuntimeSession.objects.filter(pk=session_id).update(status="ended", end_reason=EndReason.DELETED)
        events_record([Event(session_id, "session.ended", {"reason": "deleted", "close_code": 4409})])

    from prometheus_client import REGISTRY

    closes_before = REGISTRY.get_sample_value("symphainy_revocation_seconds_count") or 0
    monkeypatch.setattr("core.events._wake_local_tails", lambda: None)
    await end_elsewhere()
    assert await sock.receive_close(timeout=2) == 4409
    # The end-to-close time is in /metrics, one observation per socket closed.
    await wait_until_async(lambda: (REGISTRY.get_sample_value("symphainy_revocation_seconds_count") or 0) > closes_before,
                           interval=0.01, message="the close to be observed")
    assert REGISTRY.get_sample_value("symphainy_revocation_seconds_count") == closes_before + 1


async def test_on_sqlite_another_processs_commit_wakes_the_tail_before_its_poll(monkeypatch, settings):
    """The embedded SQLite has no NOTIFY: the watcher sees another connection's commit (a
    `manage.py` process, a second server) and wakes the tail. With the poll an hour away
    and no local wake-up, only the watcher can close this socket."""
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL wakes the tail by NOTIFY (tests/realtime/test_event_log_live.py)")
    settings.SYMPHAINY = {**settings.SYMPHAINY, "EVENT_POLL_INTERVAL": timedelta(hours=1),
                          "EVENT_WATCH_INTERVAL": timedelta(milliseconds=10)}
    monkeypatch.setattr("core.events._wake_local_tails", lambda: None)
    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    session_id = uuid.UUID(body["session_id"])

    @database_sync_to_async
    def end_elsewhere():
        RuntimeSession.objects.filter(pk=session_id).update(status="ended", end_reason=EndReason.DELETED)
        events_record([Event(session_id, "session.ended", {"reason": "deleted", "close_code": 4409})])

    await end_elsewhere()
    assert await sock.receive_close(timeout=20) == 4409


async def test_with_the_watcher_off_no_thread_watches_the_file(settings):
    import threading

    from realtime.tail import EventTail
    from realtime.wakeups import SqliteWatcher

    settings.SYMPHAINY = {**settings.SYMPHAINY, "EVENT_WATCH_INTERVAL": timedelta(0)}
    before = sum(t.name == "event-log-watch" for t in threading.enumerate())
    assert SqliteWatcher.start_for(EventTail(asyncio.get_running_loop())) is None
    assert sum(t.name == "event-log-watch" for t in threading.enumerate()) == before


async def test_a_socket_on_another_session_closes_when_its_tokens_session_ends():
    user, body = await login_new_user()
    other = await database_sync_to_async(factories.make_session)(user)
    sock, ready = await open_ready(body["access_token"], session_id=str(other.pk))
    assert ready["session_id"] == str(other.pk)
    await database_sync_to_async(session_end)(
        session_id=uuid.UUID(body["session_id"]), reason=EndReason.LOGOUT, caller=Caller.system()
    )
    assert await sock.receive_close(timeout=2) == 4409


async def test_a_role_downgrade_applies_to_an_open_socket():
    user, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    tenant = await database_sync_to_async(lambda: user.memberships.get().tenant)()
    await database_sync_to_async(membership_add)(user=user, tenant=tenant, role=Role.VIEWER, caller=Caller.system())

    async def refused() -> dict | None:
        await sock.send({"type": "intent.submit", "intent_type": "echo", "parameters": {}})
        reply = await sock.receive()
        while reply["type"] == "runtime_event":  # events of an earlier, accepted submit
            reply = await sock.receive()
        return reply if reply["type"] == "error" else None

    # The tail applies it within its poll; the socket carries on.
    reply = await wait_until_async(refused, timeout=5, message="a submit refused")
    assert reply["error"] == "permission_denied", reply
    await sock.send({"type": "ping"})
    while (frame := await sock.receive())["type"] == "runtime_event":
        pass  # the last accepted echo's events
    assert frame["type"] == "pong"


async def test_an_end_read_by_the_tail_drops_the_cached_snapshot():
    """A second handshake is answered from the cache; once the tail reads an end recorded
    by another process, the snapshot is gone and the next handshake is refused."""
    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])  # fills the cache, starts the tail
    session_id = uuid.UUID(body["session_id"])

    @database_sync_to_async
    def end_elsewhere():  # no cache drop in this process: only the tail can do it
        RuntimeSession.objects.filter(pk=session_id).update(status="ended", end_reason=EndReason.DELETED)
        events_record([Event(session_id, "session.ended", {"reason": "deleted", "close_code": 4409})])

    await end_elsewhere()
    assert await sock.receive_close(timeout=2) == 4409
    late = await make_socket(body["access_token"]).open()
    assert await late.receive_close() == 4409


async def test_a_log_recreated_under_a_running_process_is_named_anew():
    """As after a flush or a restore: the epoch row goes and comes back with a new name;
    the tail's next read carries it, and a resume against the old one is not recovered."""
    from core.models import EventLog

    _, body = await login_new_user()
    sock, ready = await open_ready(body["access_token"])
    await database_sync_to_async(lambda: EventLog.objects.all().delete())()
    await publish(body["session_id"], 1)
    frame = await sock.receive()
    new_epoch = await database_sync_to_async(log_epoch)()
    assert new_epoch != ready["epoch"] and frame["epoch"] == new_epoch
    _, again = await open_ready(body["access_token"], query=f"since=0&epoch={ready['epoch']}")
    assert again["recovered"] is False and again["epoch"] == new_epoch


def test_concurrent_writers_of_one_session_get_every_position_once():
    """Eight threads, each its own connection and transactions, recording into one session
    at once: positions 1..N, each once, none skipped (the counter row's lock serializes
    them; on SQLite the database does)."""
    import threading

    from django.db import connection

    user = factories.make_user()
    session = factories.make_session(user)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for _ in range(10):
                events_record([Event(session.pk, "x", {}), Event(session.pk, "x", {})])
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    seqs = list(SessionEvent.objects.filter(session_id=session.pk).order_by("id").values_list("seq", flat=True))
    assert sorted(seqs) == list(range(1, 161))
    assert seqs == sorted(seqs)  # id order is position order within a session
    assert SessionEventSequence.objects.get(pk=session.pk).last_seq == 160


async def test_an_end_committed_after_the_gap_wait_still_closes_its_sockets_within_a_second(settings):
    """On PostgreSQL an id is handed out at the insert, not at the commit: an end whose
    transaction commits after the tail gave its hole up (EVENT_GAP_WAIT) is still read,
    at the late pace, instead of being left to the sockets' periodic re-check (an hour
    away here)."""
    import threading

    from django.db import connection

    from realtime.tail import tail
    from tests.cancelling import until

    if connection.vendor != "postgresql":
        pytest.skip("SQLite writers take turns: ids are handed out in commit order, no holes")
    settings.SYMPHAINY = {**settings.SYMPHAINY, "EVENT_GAP_WAIT": timedelta(milliseconds=100),
                          "WS_RECHECK_INTERVAL": timedelta(hours=1)}
    _, body = await login_new_user()
    _, bystander = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    holding, release = threading.Event(), threading.Event()

    def slow_end() -> None:
        try:
            with transaction.atomic():
                session_end(session_id=uuid.UUID(body["session_id"]), reason=EndReason.DELETED, caller=Caller.system())
                holding.set()
                release.wait(60)
        finally:
            connection.close()

    ender = threading.Thread(target=slow_end, daemon=True)
    ender.start()
    try:
        await until(holding.is_set, message="the end was not written")
        # A later id commits first: the tail reads past the end's hole, then gives it up.
        await publish(bystander["session_id"])
        feed = tail()
        await until(lambda: feed.cursor.late, message="the tail did not give the hole up")
    finally:
        release.set()
    assert await sock.receive_close(timeout=10) == 4409
    await database_sync_to_async(ender.join)(10)


async def test_a_socket_that_has_not_heard_of_its_end_can_change_nothing(monkeypatch, settings):
    """Between an end's commit and the tail's read of it (or for a socket admitted from a
    snapshot taken just before the end), the socket is open on an ended session: its
    frames must not act on it. Here the tail never hears, to hold that moment open."""
    from core.models import SessionEvent
    from realtime.tail import EventTail
    from sessions_runtime.models import Intent

    async def deaf(self) -> int:
        return 0

    settings.SYMPHAINY = {**settings.SYMPHAINY, "WS_RECHECK_INTERVAL": timedelta(hours=1)}
    _, body = await login_new_user()
    session_id = uuid.UUID(body["session_id"])
    sock, _ = await open_ready(body["access_token"])
    monkeypatch.setattr(EventTail, "read_once", deaf)
    await database_sync_to_async(session_end)(session_id=session_id, reason=EndReason.DELETED, caller=Caller.system())

    await sock.send({"type": "intent.submit", "id": 1, "intent_type": "echo", "parameters": {"a": 1}})
    refused = await sock.receive()
    assert (refused["type"], refused["id"], refused["error"]) == ("error", 1, "session_not_active")
    assert not await database_sync_to_async(Intent.objects.filter(session_id=session_id).exists)()

    await sock.send({"type": "agent.message", "id": 2, "payload": {"text": "are you there"}})
    refused = await sock.receive()
    assert (refused["type"], refused["id"]) == ("error", 2), refused
    assert not await database_sync_to_async(
        SessionEvent.objects.filter(session_id=session_id, kind__startswith="agent.").exists
    )()
    await sock.close()
