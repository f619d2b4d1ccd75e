"""Resumes read in batches: the replays a burst of (re)connecting sockets asks for at once
(a restarted process's clients, thousands within seconds) are read a batch per round trip,
not a socket per round trip, off the thread every handshake queries on.

`log_replays` answers many requests exactly as `core.events.log_replay` answers each one:
the epoch and every requested session's position in two queries for the whole batch, then
for the short gaps (the usual resume: a few events missed, often by every socket of a
session from the same position) their sizes, and the events of those within the budget,
each in one query per up to SESSIONS_PER_READ sessions (the events also per READ_BYTES),
each session's range read once however many of its sockets asked. A gap longer than REPLAY_ONE_READ takes
`log_replay`'s own path (its sizes first), one request at a time.

`log_replay_read` queues a request and awaits its answer (`core.batches`): at most
REPLAY_READERS batches are read at a time, each of at most BATCH_MAX requests, so a burst
holds that many database connections whatever its size. Every batch is read after each of
its requests was queued, so after its socket subscribed to the tail: what it misses
arrives through the tail.
See docs/architecture.md#replay.
"""

from __future__ import annotations

import uuid

from django.db.models import Q

from core import events
from core.batches import Batches
from core.conf import runtime_settings
from core.events import CONTROL_KINDS, FRAME_ENVELOPE_BYTES, LoggedEvent, Replay, StoredBytes, replay_coalesce
from core.models import EventLog, SessionEvent, SessionEventSequence

# Requests answered by one batch: its positions are one query, its short gaps a few.
BATCH_MAX = 200
# Sessions whose short gaps one query reads (each range is at most REPLAY_ONE_READ events),
# and the frame bytes one query reads at most (a session's range whole, however big).
SESSIONS_PER_READ = 50
READ_BYTES = 4 * 1024 * 1024
REPLAY_READERS = 2

Request = tuple[uuid.UUID, "int | None", "str | None"]  # session id, since, epoch


def log_replays(requests: list[Request]) -> list[Replay]:
    """`log_replay` for each of `requests`, in order, with the same answers."""
    epoch = EventLog.objects.filter(pk=1).values_list("epoch", flat=True).first() or events.log_epoch()
    positions = dict(
        SessionEventSequence.objects.filter(pk__in={session_id for session_id, _, _ in requests})
        .values_list("pk", "last_seq")
    )
    answers: list[Replay | None] = []
    short: dict[uuid.UUID, tuple[int, int]] = {}  # session -> the range its short gaps span
    for session_id, since, asked_epoch in requests:
        last = positions.get(session_id) or 0
        answer = _without_rows(last, epoch, since, asked_epoch)
        if answer is None and last - since > events.REPLAY_ONE_READ:
            answer = events.log_replay(session_id=session_id, since=since, epoch=asked_epoch)
        elif answer is None:
            low, high = short.get(session_id, (since, last))
            short[session_id] = (min(low, since), max(high, last))
        answers.append(answer)
    # Judged on the sizes alone, as `log_replay` judges a gap: then only what is sent is read.
    sizes = _sizes_read(short)
    needed: dict[uuid.UUID, tuple[int, int]] = {}
    for index, (answer, (session_id, since, _)) in enumerate(zip(answers, requests)):
        if answer is None:
            last = positions[session_id]
            if not _recoverable(sizes.get(session_id, []), since, last):
                answers[index] = Replay(seq=last, epoch=epoch, recovered=False, events=[])
            else:
                low = needed.get(session_id, (since, last))[0]
                needed[session_id] = (min(low, since), last)
    found = _events_read(needed, sizes)
    return [
        answer if answer is not None else _recovered(found[session_id], epoch, since, positions[session_id])
        for answer, (session_id, since, _) in zip(answers, requests)
    ]


def _without_rows(last: int, epoch: str, since: int | None, asked_epoch: str | None) -> Replay | None:
    """The answer the positions alone give (as `log_replay` judges it), or None: read rows."""
    if since is None:
        return Replay(seq=last, epoch=epoch, recovered=None, events=[])
    if asked_epoch != epoch or since < 0 or since > last or last - since > runtime_settings.REPLAY_MAX_EVENTS:
        return Replay(seq=last, epoch=epoch, recovered=False, events=[])
    if since == last:
        return Replay(seq=last, epoch=epoch, recovered=True, events=[])
    return None


def _ranges(ranges: list[tuple[uuid.UUID, tuple[int, int]]]) -> Q:
    condition = Q()
    for session_id, (low, high) in ranges:
        condition |= Q(session_id=session_id, seq__gt=low, seq__lte=high)
    return condition


def _sizes_read(ranges: dict[uuid.UUID, tuple[int, int]]) -> dict[uuid.UUID, list[tuple[int, int]]]:
    """Each session's (position, frame bytes) in its range, as the database measures them."""
    sizes: dict[uuid.UUID, list[tuple[int, int]]] = {}
    items = list(ranges.items())
    for start in range(0, len(items), SESSIONS_PER_READ):
        query = (SessionEvent.objects.filter(_ranges(items[start:start + SESSIONS_PER_READ])).order_by("session_id", "seq")
                 .annotate(stored=StoredBytes("data")).values_list("session_id", "seq", "kind", "stored"))
        for session_id, seq, kind, stored in query:
            frame_bytes = 0 if kind in CONTROL_KINDS else stored + FRAME_ENVELOPE_BYTES + len(kind)
            sizes.setdefault(session_id, []).append((seq, frame_bytes))
    return sizes


def _recoverable(sizes: list[tuple[int, int]], since: int, last: int) -> bool:
    """Every position after `since` still there (a gap means pruned, never skipped), within the bytes."""
    gap = [frame_bytes for seq, frame_bytes in sizes if since < seq <= last]
    return len(gap) == last - since and sum(gap) <= runtime_settings.REPLAY_MAX_BYTES


def _events_read(
    ranges: dict[uuid.UUID, tuple[int, int]], sizes: dict[uuid.UUID, list[tuple[int, int]]]
) -> dict[uuid.UUID, list[LoggedEvent]]:
    """The events of each session's range, a query per READ_BYTES of them (at least a range)."""
    found: dict[uuid.UUID, list[LoggedEvent]] = {session_id: [] for session_id in ranges}
    group: list[tuple[uuid.UUID, tuple[int, int]]] = []
    group_bytes = 0
    for session_id, (low, high) in [*ranges.items(), (None, (0, 0))]:
        range_bytes = sum(b for seq, b in sizes.get(session_id, []) if low < seq <= high)
        if group and (session_id is None or group_bytes + range_bytes > READ_BYTES or len(group) >= SESSIONS_PER_READ):
            query = SessionEvent.objects.filter(_ranges(group)).order_by("session_id", "seq").values(*events.LOGGED_FIELDS)
            for row in query:
                found[row["session_id"]].append(LoggedEvent(**row))
            group, group_bytes = [], 0
        group.append((session_id, (low, high)))
        group_bytes += range_bytes
    return found


def _recovered(rows: list[LoggedEvent], epoch: str, since: int, last: int) -> Replay:
    found = [event for event in rows if since < event.seq <= last]
    if len(found) != last - since:  # pruned between the two reads
        return Replay(seq=last, epoch=epoch, recovered=False, events=[])
    return Replay(seq=last, epoch=epoch, recovered=True, events=replay_coalesce(found))


# A burst goes at REPLAY_READERS batches at a time, each on a database connection of its own.
_replays = Batches(lambda requests: log_replays(requests), name="log-replay", readers=REPLAY_READERS, size=BATCH_MAX)


async def log_replay_read(*, session_id: uuid.UUID, since: int | None, epoch: str | None) -> Replay:
    """`log_replay`'s answer for one socket, read with the other requests of its moment."""
    return await _replays.answer((session_id, since, epoch))
