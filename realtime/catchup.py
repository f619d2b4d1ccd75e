"""A (re)connecting socket's catch-up: where it starts in the log (the newest position, or
the replay of a resume), and its session's agent answers in flight: after `session.ready`
and the replay, one `agent.snapshot` per answer, then the live tokens from its
`next_index`, none missing and none twice.

The socket subscribed to its process's tail before the handshake check, so every token
that reaches this process after that waits in its outbox. The answer's row is read after
that, but it lags the live tokens by up to one write (AGENT_SNAPSHOT_INTERVAL): a token
that arrived just before the subscription may not be in it yet. So the row is read again
until it covers every such token, which is so when either

- its `next_index` reaches the first token of that answer the outbox holds (tokens come
  in order), or
- the running process has written it twice since the first read: its `writes` went up by
  two, and the second of those writes began after the first one committed, which was
  after this read began, so after the subscription; each write holds every token sent
  before it began (an answer with no new token renews its lease, also a write, every
  half second).

Then tokens with an index below `next_index` are dropped, in the outbox and later.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from typing import Any, Callable, Protocol

from channels.db import database_sync_to_async
from django.utils import timezone

from core.conf import runtime_settings
from core.events import LoggedEvent, Replay
from core.replays import log_replay_read
from core.tasks import Flights
from realtime.grants import SocketGrant
from sessions_runtime.answers import AGENT_SNAPSHOT, AGENT_STARTED, AGENT_TOKEN, TERMINAL_KINDS, agent_answers_in_flight

# A running process writes each of its answers at least twice a second: a row that has not
# caught up within this is of a stuck or dead process (the sweep fails it), and is sent
# as it stands.
SNAPSHOT_WAIT_S = 2.0


class OpeningSocket(Protocol):
    """What a catch-up uses of an opening socket (`realtime.socket.OpenSocket`, which calls it)."""

    grant: SocketGrant
    outbox: deque | None
    transport: Any
    feed: Any  # its tail: `positions`, `epoch`, `answering`, `read_done`
    read_mark: int


def _held_first(socket: OpeningSocket) -> dict[str, int]:
    """The index of the first live token of each answer waiting in the socket's outbox."""
    first: dict[str, int] = {}
    for kind, frame, _ in socket.outbox or ():
        if kind == "live" and frame.get("event_type") == AGENT_TOKEN:
            data = frame.get("data") or {}
            first.setdefault(str(data.get("message_id")), int(data.get("index", 0)))
    return first


async def replay_for(socket: OpeningSocket, since: int | None, epoch: str | None) -> Replay:
    """A fresh socket starts from the newest position known here: the check's, or a later
    one its process's tail read since. Newer events reach it through the tail (it
    subscribed before the check), so nothing falls between the two. A resume gets the
    bounded replay, read off the handshake's thread."""
    grant, feed = socket.grant, socket.feed
    if since is None and feed is not None:
        seq = max(grant.event_seq, feed.positions.get(grant.session_id, 0))
        return Replay(seq=seq, epoch=feed.epoch, recovered=None, events=[])
    return await log_replay_read(session_id=grant.session_id, since=since, epoch=epoch)


def answers_possible(socket: OpeningSocket) -> bool:
    """Whether the socket's session may have answers in flight: its tail knows of some, or
    has not yet done a read begun after the socket subscribed (an answer started before
    that may not be known to it yet; one started after reaches the socket whole)."""
    feed = socket.feed
    return feed is None or socket.grant.session_id in feed.answering or feed.read_done <= socket.read_mark


# Sockets of one session opening together (a restarted process's clients) share a read of
# its answers: under a reconnect storm the tail's own reads lag, so nearly every opening
# socket reads, and those reads took 19 % of the one database thread. A socket joins only
# a read that has not begun yet (it begins when the database thread takes it up), so the
# rows it gets were read after it subscribed (it subscribed before it asks); one that began
# earlier cannot serve it.
_answer_reads = Flights()


async def answers_read(socket: OpeningSocket) -> list[dict[str, Any]]:
    """The rows of the answers in flight of the socket's session, from a read begun after
    the socket subscribed (and shared: the rows are not to be changed)."""
    session_id = socket.grant.session_id
    return await _answer_reads.shared(
        session_id, lambda begin: database_sync_to_async(_answers_read_begun)(begin, session_id), within=0, begins=True
    )


def _answers_read_begun(begin: Callable[[], None], session_id: uuid.UUID) -> list[dict[str, Any]]:
    begin()
    return agent_answers_in_flight(session_id=session_id)


async def answers_snapshot(socket: OpeningSocket, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Send one `agent.snapshot` per answer in flight of the socket's session, from `rows`
    read again until they cover what the outbox lacks; returns each answer's
    `next_index`, below which the socket drops live tokens. No answer: no wait."""
    if not rows:
        return {}
    first_writes = {row["pk"]: row["writes"] for row in rows}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SNAPSHOT_WAIT_S
    while True:
        held = _held_first(socket)
        behind = [
            row for row in rows
            if row["next_index"] < held.get(str(row["pk"]), row["next_index"] + 1)
            and row["writes"] < first_writes.get(row["pk"], row["writes"]) + 2
        ]
        if not behind or loop.time() >= deadline:
            break
        await asyncio.sleep(runtime_settings.AGENT_SNAPSHOT_INTERVAL.total_seconds())
        rows = await answers_read(socket)  # an answer that ended meanwhile is gone
    filters = {}
    for row in rows:
        message_id = str(row["pk"])
        filters[message_id] = row["next_index"]
        await socket.transport.send_frame({
            "type": "runtime_event", "event_type": AGENT_SNAPSHOT, "timestamp": timezone.now().isoformat(),
            "data": {
                "conversation_id": row["conversation_id"], "message_id": message_id, "question": row["question"],
                "text": row["text"], "next_index": row["next_index"],
            },
        })
    return filters


def answer_token_wanted(filters: dict[str, int], frame: dict[str, Any]) -> bool:
    """Whether a live frame goes out: not a token its socket's snapshot already held."""
    if frame.get("event_type") != AGENT_TOKEN:
        return True
    data = frame.get("data") or {}
    below = filters.get(str(data.get("message_id")))
    return below is None or int(data.get("index", 0)) >= below


def answers_forget(filters: dict[str, int], event: LoggedEvent) -> None:
    """An answer's terminal event: its filter is no longer needed."""
    if event.kind in TERMINAL_KINDS:
        filters.pop(str(event.data.get("message_id")), None)


class AnswersInFlight:
    """A tail's index of the sessions with agent answers in flight and their message ids:
    read from the answers' rows when it starts, then kept from the log (started, then a
    terminal event), so that a socket opening on any other session reads no answer row."""

    def __init__(self) -> None:
        self.by_session: dict[uuid.UUID, set[str]] = {}

    def load(self, pairs: list[tuple[uuid.UUID, str]]) -> None:
        for session_id, message_id in pairs:
            self.by_session.setdefault(session_id, set()).add(message_id)

    def note(self, row: LoggedEvent) -> None:
        if row.kind == AGENT_STARTED:
            self.by_session.setdefault(row.session_id, set()).add(str(row.data.get("message_id")))
        elif row.kind in TERMINAL_KINDS and row.session_id in self.by_session:
            self.by_session[row.session_id].discard(str(row.data.get("message_id")))
            if not self.by_session[row.session_id]:
                del self.by_session[row.session_id]

    def __contains__(self, session_id: object) -> bool:
        return session_id in self.by_session
