"""The session event log, the one way a change reaches sockets: writing (in the change's
own transaction), reading, replay and pruning. See docs/architecture.md#the-session-event-log.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable

from django.db import IntegrityError, connection, transaction
from django.db.models import F, Func, IntegerField, OuterRef, Q, Subquery
from django.utils import timezone

from core.conf import runtime_settings
from core.exceptions import CloseCode
from core.models import EventLog, SessionEvent, SessionEventSequence

logger = logging.getLogger(__name__)

NOTIFY_CHANNEL = "symphainy_session_events"

# Control events: acted upon by the server, never sent as frames.
SESSION_ENDED = "session.ended"
ACCESS_CHANGED = "access.changed"
SOCKET_DISCONNECT = "socket.disconnect"  # one socket of the session, by its channel name
CONTROL_KINDS = frozenset({SESSION_ENDED, ACCESS_CHANGED, SOCKET_DISCONNECT})
# Execution progress may be coalesced on replay: only the latest per execution is sent.
EXECUTION_PROGRESS = "execution.progress"


@dataclass(frozen=True, slots=True)
class Event:
    """An event to record: what happened (`kind`) to which session, with its data."""

    session_id: uuid.UUID
    kind: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """An event as read back from the log."""

    id: int
    session_id: uuid.UUID
    seq: int
    kind: str
    data: dict[str, Any]
    at: datetime

    def frame(self, epoch: str) -> dict[str, Any]:
        """The `runtime_event` frame of a replayable event, with its position."""
        return {
            "type": "runtime_event", "event_type": self.kind, "data": self.data, "timestamp": self.at.isoformat(),
            "seq": self.seq, "epoch": epoch,
        }


# --- Hooks of this process's tails (registered by realtime.tail; core imports no app) ----
_commit_listeners: list[Callable[[], None]] = []
_live_listeners: list[Callable[[uuid.UUID, dict[str, Any]], None]] = []


def on_local_commit(listener: Callable[[], None]) -> None:
    """Call `listener` (from any thread) after a transaction of this process recorded events."""
    if listener not in _commit_listeners:
        _commit_listeners.append(listener)


def on_live_event(listener: Callable[[uuid.UUID, dict[str, Any]], None]) -> None:
    """Call `listener(session_id, frame)` for every ephemeral frame sent in this process."""
    if listener not in _live_listeners:
        _live_listeners.append(listener)


def _wake_local_tails() -> None:
    for listener in list(_commit_listeners):
        try:
            listener()
        except Exception:  # noqa: BLE001 - a tail's own poll picks the events up anyway
            logger.warning("could not wake a local event tail", exc_info=True)


# --- Writing ------------------------------------------------------------------------------
def _uuid_db(value: uuid.UUID) -> Any:
    return SessionEventSequence._meta.pk.get_db_prep_value(value, connection, prepared=False)


def _positions_take(counts: dict[uuid.UUID, int]) -> dict[uuid.UUID, int]:
    """Take `n` positions for each session; returns each session's last one. One upsert
    per batch of sessions (sorted, so two transactions lock rows in the same order)."""
    table = connection.ops.quote_name(SessionEventSequence._meta.db_table)
    last: dict[uuid.UUID, int] = {}
    ordered = sorted(counts)
    for start in range(0, len(ordered), 500):
        batch = ordered[start : start + 500]
        values = ", ".join(["(%s, %s)"] * len(batch))
        params: list[Any] = []
        for session_id in batch:
            params += [_uuid_db(session_id), counts[session_id]]
        # Written as SQL because the ORM has no "increment on conflict, returning": this is
        # one statement on PostgreSQL and SQLite alike (both have ON CONFLICT and RETURNING).
        sql = (
            f"INSERT INTO {table} (session_id, last_seq) VALUES {values} "
            f"ON CONFLICT (session_id) DO UPDATE SET last_seq = {table}.last_seq + excluded.last_seq "
            "RETURNING session_id, last_seq"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            for session_id, last_seq in cursor.fetchall():
                last[session_id if isinstance(session_id, uuid.UUID) else uuid.UUID(str(session_id))] = last_seq
    return last


def events_record(events: Iterable[Event]) -> int:
    """Record `events` in the current transaction (in one of its own outside any).
    Returns how many were recorded."""
    events = list(events)
    if not events:
        return 0
    with transaction.atomic():
        counts: dict[uuid.UUID, int] = {}
        for event in events:
            counts[event.session_id] = counts.get(event.session_id, 0) + 1
        last = _positions_take(counts)
        next_seq = {session_id: last[session_id] - counts[session_id] + 1 for session_id in counts}
        now = timezone.now()
        rows = []
        for event in events:
            rows.append(SessionEvent(session_id=event.session_id, seq=next_seq[event.session_id], kind=event.kind,
                                     data=event.data, at=now))
            next_seq[event.session_id] += 1
        SessionEvent.objects.bulk_create(rows, batch_size=500)
        if connection.vendor == "postgresql":
            # Delivered to every LISTENing tail when (and only if) this transaction commits.
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_notify(%s, '')", [NOTIFY_CHANNEL])
        transaction.on_commit(_wake_local_tails)
    return len(rows)


def runtime_event_publish(session_id: uuid.UUID, event_type: str, data: dict[str, Any]) -> None:
    """A replayable `runtime_event` of the session, recorded with the current change."""
    events_record([Event(session_id=session_id, kind=event_type, data=data)])


def sessions_ended_record(session_ids: Iterable[uuid.UUID], *, reason: str, close_code: CloseCode) -> None:
    """Every socket of these sessions, and every socket opened with their tokens, closes
    with `close_code` on every process; their access snapshots are dropped."""
    session_ids = list(session_ids)
    data = {"reason": reason, "close_code": int(close_code)}
    events_record(Event(session_id=session_id, kind=SESSION_ENDED, data=data) for session_id in session_ids)
    SessionEventSequence.objects.filter(session_id__in=session_ids, ended_at__isnull=True).update(
        ended_at=timezone.now()
    )


def socket_disconnect_record(session_id: uuid.UUID, *, channel_name: str, close_code: CloseCode) -> None:
    """The socket of this session with this channel name closes with `close_code`, on
    whichever process holds it; the session and its other sockets carry on."""
    data = {"channel_name": channel_name, "close_code": int(close_code)}
    events_record([Event(session_id=session_id, kind=SOCKET_DISCONNECT, data=data)])


def access_changed_record(session_ids: Iterable[uuid.UUID], *, role: str) -> None:
    """Open sockets of these sessions carry on with `role` (a new role in the tenant)."""
    events_record(Event(session_id=session_id, kind=ACCESS_CHANGED, data={"role": role}) for session_id in session_ids)


async def live_event_send(session_id: uuid.UUID, event_type: str, data: dict[str, Any]) -> None:
    """An ephemeral `runtime_event` (an agent's token) for the session's sockets, sent now
    and never logged: a tab that missed it gets the text so far in an `agent.snapshot`,
    and the whole text with the replayable terminal event. Who hears it:
    docs/architecture.md#live-frames."""
    frame = {"type": "runtime_event", "event_type": event_type, "data": data, "timestamp": timezone.now().isoformat()}
    for listener in list(_live_listeners):
        listener(session_id, frame)


# --- Reading ------------------------------------------------------------------------------
def log_epoch() -> str:
    """The log's epoch, created with the log (and again if the row went, as after a flush)."""
    row = EventLog.objects.filter(pk=1).values_list("epoch", flat=True).first()
    if row is not None:
        return row
    try:
        with transaction.atomic():
            return EventLog.objects.get_or_create(pk=1, defaults={"epoch": secrets.token_hex(8)})[0].epoch
    except IntegrityError:  # created by another process at the same moment
        return EventLog.objects.get(pk=1).epoch


def _logged(row: dict[str, Any]) -> LoggedEvent:
    return LoggedEvent(**row)


LOGGED_FIELDS = ("id", "session_id", "seq", "kind", "data", "at")


def log_last_id() -> int:
    """The newest id in the log (0 when empty): where a new tail starts."""
    return SessionEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


def log_read(
    *, after: int, also: Iterable[int] = (), ranges: Iterable[tuple[int, int]] = (), limit: int = 1000
) -> list[LoggedEvent]:
    """Rows with an id above `after`, plus the rows `also` and those within `ranges` (the
    holes a tail is still waiting for), in id order: one query per wake-up of a tail,
    whatever its socket count."""
    condition = Q(id__gt=after)
    also = list(also)
    if also:
        condition |= Q(id__in=also)
    for first, last in ranges:
        condition |= Q(id__gte=first, id__lte=last)
    rows = SessionEvent.objects.filter(condition).order_by("id").values(*LOGGED_FIELDS)[:limit]
    return [_logged(row) for row in rows]


@dataclass(frozen=True, slots=True)
class Replay:
    """What a (re)connecting socket gets: the session's position, and the events after
    `since` when they could all be recovered."""

    seq: int
    epoch: str
    recovered: bool | None  # None when no `since` was asked for
    events: list[LoggedEvent]


class StoredBytes(Func):
    """The size in bytes of a JSON column as the database holds it: what a replay would
    read, measured without reading it."""

    output_field = IntegerField()
    template = "octet_length(CAST(%(expressions)s AS text))"

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(compiler, connection, template="length(CAST(%(expressions)s AS BLOB))", **extra)


# A `runtime_event` frame's bytes besides its data and event type: type, timestamp, seq, epoch.
FRAME_ENVELOPE_BYTES = 140


def log_position(session_id: uuid.UUID) -> int:
    """The session's latest position (0 before its first event)."""
    return SessionEventSequence.objects.filter(pk=session_id).values_list("last_seq", flat=True).first() or 0


# A gap of at most this many events is read in one query, sizes and data together (so at
# most this many rows' data is read before the byte budget is judged); a longer one has its
# sizes read first. A resume after a restart usually misses a few events.
REPLAY_ONE_READ = 100


def _epoch_and_position(session_id: uuid.UUID) -> tuple[str, int]:
    """The log's epoch and the session's latest position, in one round trip (a burst of
    resumes, as after a restart, queues on the replay's threads: each trip counts)."""
    last = SessionEventSequence.objects.filter(pk=session_id).values("last_seq")[:1]
    row = EventLog.objects.filter(pk=1).annotate(last=Subquery(last)).values_list("epoch", "last").first()
    if row is None:  # no epoch yet: made by log_epoch
        return log_epoch(), log_position(session_id)
    return row[0], row[1] or 0


def log_replay(*, session_id: uuid.UUID, since: int | None, epoch: str | None) -> Replay:
    """The session's latest position and epoch; with `since`, every replayable event after
    it (progress coalesced to the latest per execution), or `recovered=False` when the log
    cannot give them all: another epoch, a position this session never had, events
    already pruned, or a gap over the replay's bound (REPLAY_MAX_EVENTS, REPLAY_MAX_BYTES),
    which is judged before the data of more than REPLAY_ONE_READ events is read."""
    current_epoch, last = _epoch_and_position(session_id)
    if since is None:
        return Replay(seq=last, epoch=current_epoch, recovered=None, events=[])
    unrecovered = Replay(seq=last, epoch=current_epoch, recovered=False, events=[])
    if epoch != current_epoch or since < 0 or since > last:
        return unrecovered
    # Positions are given out without holes, so the gap's size is known without a read.
    if last - since > runtime_settings.REPLAY_MAX_EVENTS:
        return unrecovered
    if since == last:
        return Replay(seq=last, epoch=current_epoch, recovered=True, events=[])
    missed = SessionEvent.objects.filter(session_id=session_id, seq__gt=since, seq__lte=last).order_by("seq")
    if last - since <= REPLAY_ONE_READ:
        found = list(missed.annotate(stored=StoredBytes("data")).values(*LOGGED_FIELDS, "stored"))
        size = sum(row["stored"] + FRAME_ENVELOPE_BYTES + len(row["kind"]) for row in found if row["kind"] not in CONTROL_KINDS)
        # Every position after `since` must still be there (a gap means pruned, never skipped).
        if len(found) != last - since or size > runtime_settings.REPLAY_MAX_BYTES:
            return unrecovered
        return Replay(seq=last, epoch=current_epoch, recovered=True,
                      events=replay_coalesce([_logged({key: row[key] for key in LOGGED_FIELDS}) for row in found]))
    # The sizes in chunks, as the database measures them: the read stops as soon as the
    # byte budget is spent, so an oversized gap costs a few rows' sizes, not the gap.
    present, frame_bytes, budget = 0, 0, runtime_settings.REPLAY_MAX_BYTES
    for kind, stored in missed.annotate(stored=StoredBytes("data")).values_list("kind", "stored").iterator(100):
        present += 1
        if kind not in CONTROL_KINDS:
            frame_bytes += stored + FRAME_ENVELOPE_BYTES + len(kind)
            if frame_bytes > budget:
                return unrecovered
    # Every position after `since` must still be there (a gap means pruned, never skipped).
    if present != last - since:
        return unrecovered
    rows = [_logged(row) for row in missed.values(*LOGGED_FIELDS)]
    if len(rows) != last - since:  # pruned between the two reads
        return unrecovered
    return Replay(seq=last, epoch=current_epoch, recovered=True, events=replay_coalesce(rows))


def replay_coalesce(rows: list[LoggedEvent]) -> list[LoggedEvent]:
    """Drop control events, and every progress event followed by a later one of the same
    execution (the client wants where it stands, not every step it missed)."""
    latest_progress: dict[Any, int] = {}
    for row in rows:
        if row.kind == EXECUTION_PROGRESS:
            latest_progress[row.data.get("execution_id")] = row.seq
    return [
        row for row in rows
        if row.kind not in CONTROL_KINDS
        and (row.kind != EXECUTION_PROGRESS or latest_progress.get(row.data.get("execution_id")) == row.seq)
    ]


# --- Pruning --------------------------------------------------------------------------------
def log_prune(*, now: datetime | None = None) -> int:
    """Delete what no resume can ask for: events older than EVENT_RETENTION that are not
    among the last EVENT_RETENTION_COUNT of a live session, and every event (and the
    position row) of a session that ended longer than EVENT_RETENTION ago. Returns how
    many events went."""
    now = now or timezone.now()
    cutoff = now - runtime_settings.EVENT_RETENTION
    keep = runtime_settings.EVENT_RETENTION_COUNT
    ended = SessionEventSequence.objects.filter(ended_at__lt=cutoff)
    deleted, _ = SessionEvent.objects.filter(session_id__in=ended.values("session_id")).delete()
    # Their positions go too: an ended session takes no socket, so no resume can ask.
    ended.delete()
    last_seq = SessionEventSequence.objects.filter(session_id=OuterRef("session_id")).values("last_seq")[:1]
    old = (
        SessionEvent.objects.filter(at__lt=cutoff)
        .annotate(last_seq=Subquery(last_seq))
        .filter(seq__lte=F("last_seq") - keep)
    )
    more, _ = SessionEvent.objects.filter(pk__in=list(old.values_list("pk", flat=True)[:50_000])).delete()
    return deleted + more


def log_size() -> int:
    return SessionEvent.objects.count()

