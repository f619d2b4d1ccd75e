"""One open socket's life, as plain asyncio: from the event log to the client, and the
timer that ends it. An `OpenSocket` subscribes to its process's tail of the event log
(`realtime.tail`) before the handshake judges access, sends `session.ready`, the replay of a
resume and a snapshot of each agent answer in flight (`realtime.catchup`), then what the
tail hands over in log order, each logged event once; an end, or an operator's disconnect
of this one socket, closes it. Its timer closes it at the token's expiry and re-checks the
session every WS_RECHECK_INTERVAL. It talks to its client only through a `Transport`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections import deque
from datetime import datetime
from typing import Any, Awaitable, Protocol

from django.utils import timezone

from core.conf import runtime_settings
from core.events import LoggedEvent
from core.exceptions import TokenExpired
from core.limits import TokenBucket, parse_rate
from core.metrics import HANDSHAKES, OPEN_SOCKETS, REVOCATION_LATENCY
from core.tasks import background
from realtime import heartbeat
from realtime.catchup import (
    answer_token_wanted, answers_forget, answers_possible, answers_read, answers_snapshot, replay_for,
)
from realtime.drain import draining
from realtime.grants import SocketGrant
from realtime.handshake import SocketCredentials, socket_cap_release
from realtime.presence import connection_record, registry
from realtime.protocol import session_ready
from realtime.rechecks import recheck_delay, recheck_shared
from realtime.tail import EventTail, tail

logger = logging.getLogger(__name__)


class Transport(Protocol):
    """What an open socket needs of its connection."""
    channel_name: str
    async def send_frame(self, frame: dict[str, Any]) -> None: ...
    async def drained(self) -> None: ...
    async def close_with(self, code: int, reason: str) -> None: ...
    async def guarded(self, work: Awaitable[Any], *, closing: bool) -> bool: ...


class OpenSocket:
    # Slots, and nothing a socket does not need: idle sockets are the memory budget.
    __slots__ = ("transport", "client_address", "user_agent", "grant", "bucket", "last_seen", "feed", "keys",
                 "last_seq", "opening", "outbox", "drainer", "ended", "role", "timer", "gone", "answers", "read_mark")

    def __init__(self, transport: Transport, *, client_address: str = "", user_agent: str = "") -> None:
        self.transport = transport
        self.client_address = client_address
        self.user_agent = user_agent
        self.grant: SocketGrant | None = None
        self.bucket: TokenBucket | None = None
        self.last_seen: datetime | None = None
        # Where it listens (its session, its token's session); the last position sent.
        self.feed: EventTail | None = None
        self.keys: tuple[uuid.UUID, uuid.UUID] | None = None
        self.last_seq = 0
        # Until `session.ready` and the replay are out, what the tail hands over waits:
        # events in the outbox, an end in `ended`, a new role in `role`.
        self.opening = True
        self.outbox: deque | None = None
        self.drainer: asyncio.Task | None = None
        self.ended: tuple[int, str] | None = None
        self.role: str | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.gone = False
        # The answers in flight its snapshot held: message id -> the first token not in it.
        self.answers: dict[str, int] | None = None
        self.read_mark = 0  # the tail's reads begun when this socket subscribed

    # --- Life -------------------------------------------------------------------------
    async def subscribe(self, session_id: uuid.UUID, token_session_id: uuid.UUID) -> None:
        """Listen to the log for this session's events and its token session's end."""
        feed = tail()
        await feed.start()
        self.feed, self.keys = feed, (session_id, token_session_id)
        feed.subscribe(self, session_id=session_id, token_session_id=token_session_id)
        self.read_mark = feed.reads

    def unsubscribe(self) -> None:
        if self.feed is not None and self.keys is not None:
            self.feed.unsubscribe(self, session_id=self.keys[0], token_session_id=self.keys[1])
        self.feed = None

    async def open(self, grant: SocketGrant, credentials: SocketCredentials) -> None:
        """Serve the session: record the socket, send `session.ready` (and the replay of a
        resume), then what the tail handed over meanwhile."""
        # First: from here on, `closed()` gives back the socket's place under the cap.
        self.grant = grant
        OPEN_SOCKETS.inc()
        await heartbeat.ensure_running()
        registry().opened(connection_record(
            session_id=grant.session_id, user_id=grant.user_id, channel_name=self.transport.channel_name,
            client_address=self.client_address, user_agent=self.user_agent,
        ))
        self.bucket = TokenBucket(*parse_rate(runtime_settings.WS_MESSAGE_RATE))
        self.last_seen = timezone.now()
        replay = await replay_for(self, credentials.since, credentials.epoch)
        self.last_seq = replay.seq
        # Read before `session.ready` (nothing but a catch-up waits after it), and only when
        # the session may have answers in flight.
        answers = await answers_read(self) if answers_possible(self) else []
        await self.transport.send_frame(session_ready(grant, replay))
        for event in replay.events:
            # As fast as the client reads, so its own replay never fills the send buffer.
            await self.transport.drained()
            if self.gone:
                return
            await self.transport.send_frame(event.frame(replay.epoch))
        self.answers = await answers_snapshot(self, answers) or None
        self.opening = False
        HANDSHAKES.labels(outcome="accepted").inc()
        if self.ended is not None:
            await self.transport.close_with(*self.ended)
            return
        if self.role is not None:
            self.log_access_changed(self.role)
        self._schedule_check()
        self._drain_soon()

    def closed(self) -> None:
        """The connection is gone: stop the timer, leave the log, give back the cap."""
        self.gone = True
        if self.timer is not None:
            self.timer.cancel()
        self.unsubscribe()
        if self.grant is not None:
            OPEN_SOCKETS.dec()
            socket_cap_release(self.grant.user_id)
            registry().closed(self.transport.channel_name)

    def refreshed(self, grant: SocketGrant) -> None:
        """A new token was checked (`auth.refresh`): carry on with it."""
        self.grant = grant
        self._schedule_check()

    # --- From the event log (called by this process's tail, on the event loop) ---------
    def log_events(self, events: list[LoggedEvent], epoch: str) -> None:
        self._queue(("log", events, epoch))

    def live_frame(self, frame: dict[str, Any]) -> None:
        self._queue(("live", frame, ""))

    def log_ended(self, close_code: int, reason: str, ended_at: float) -> None:
        reason = reason or "session_ended"
        if self.opening and not self.gone:
            self.ended = (close_code, reason)
        elif not self.gone:
            self.gone = True
            background(self._revoke(close_code, reason, ended_at))

    def log_disconnected(self, channel_name: str, close_code: int, at: float) -> None:
        if channel_name == self.transport.channel_name:  # an operator closed this one socket
            self.log_ended(close_code, "disconnected", at)

    async def _revoke(self, close_code: int, reason: str, ended_at: float) -> None:
        await self.transport.close_with(close_code, reason)
        REVOCATION_LATENCY.observe(max(0.0, time.time() - ended_at))

    def log_access_changed(self, role: str) -> None:
        """A new role in the tenant: carry on with it (a lost one arrives as `log_ended`)."""
        if self.opening or self.grant is None:
            self.role = role
            return
        self.role = None
        self.grant = dataclasses.replace(self.grant, role=role)

    def _queue(self, item: tuple[str, Any, str]) -> None:
        if self.gone:
            return
        if self.outbox is None:
            self.outbox = deque()
        self.outbox.append(item)
        if not self.opening:
            self._drain_soon()

    def _drain_soon(self) -> None:
        if self.outbox and (self.drainer is None or self.drainer.done()):
            self.drainer = background(self._drain())

    async def _drain(self) -> None:
        """Send what the tail handed over, in order, each logged event once (a position at or
        below the last sent was in the replay or predates the socket)."""
        try:
            while self.outbox and not self.gone:
                kind, payload, epoch = self.outbox.popleft()
                if kind == "live":
                    if self.answers is None or answer_token_wanted(self.answers, payload):
                        await self.transport.send_frame(payload)
                    continue
                for event in payload:
                    if event.seq <= self.last_seq:
                        continue
                    self.last_seq = event.seq
                    if self.answers:
                        answers_forget(self.answers, event)
                    await self.transport.send_frame(event.frame(epoch))
        except Exception:  # noqa: BLE001 - the peer went while we sent; its disconnect follows
            logger.debug("send to a departed peer on %s", self.transport.channel_name, exc_info=True)
            self.gone = True
        self.outbox = None

    # --- The timer: token expiry and the periodic session re-check -------------------
    # A timer handle per socket, not a sleeping task: a few hundred bytes instead of a
    # task and its coroutine frame, for every idle socket.
    def _schedule_check(self) -> None:
        """Wake when `recheck_delay` says: the token's or the session's expiry, or the next
        re-check."""
        if self.timer is not None:
            self.timer.cancel()
        if self.gone:
            return
        self.timer = asyncio.get_running_loop().call_later(recheck_delay(self.grant), self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        background(self._check())

    async def _check(self) -> None:
        """Close at an unrefreshed token's expiry; else re-check the session, with the other
        sockets of its key (`realtime.rechecks`: a lost end event cannot keep it open), and
        wait again."""
        if self.grant is None or self.gone or draining():  # the drain closes it: no more checks
            return
        if self.grant.claims.expires_at.timestamp() <= time.time():
            error = TokenExpired("The access token expired; send auth.refresh before it does.")
            await self.transport.close_with(int(error.close_code), error.code)
            return
        completed = await self.transport.guarded(self._recheck(), closing=True)
        if completed and self.timer is None:
            self._schedule_check()

    async def _recheck(self) -> None:
        grant = self.grant
        fresh = await recheck_shared(grant)
        if self.grant is grant:  # not replaced by a refresh or a role change meanwhile
            self.grant = fresh
