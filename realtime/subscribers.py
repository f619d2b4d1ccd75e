"""The sockets a process's tail serves, indexed by what they hear:

- by the session a socket is on: every event (replayable ones become frames) and live frame;
- by the session its token belongs to: that session's end and access changes, so a socket
  opened on session X with a token of session S closes when S ends.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any, Protocol

from core.events import ACCESS_CHANGED, CONTROL_KINDS, SESSION_ENDED, SOCKET_DISCONNECT, LoggedEvent
from core.exceptions import CloseCode
from core.metrics import EVENT_TAIL_DELIVERED
from sessions_runtime.access import access_cache_drop_local


class Subscriber(Protocol):
    def log_events(self, events: list[LoggedEvent], epoch: str) -> None: ...
    def log_ended(self, close_code: int, reason: str, ended_at: float) -> None: ...
    def log_access_changed(self, role: str) -> None: ...
    def log_disconnected(self, channel_name: str, close_code: int, at: float) -> None: ...
    def live_frame(self, frame: dict[str, Any]) -> None: ...


class SocketIndex:
    def __init__(self) -> None:
        self.by_session: dict[uuid.UUID, set[Subscriber]] = defaultdict(set)
        self.by_token_session: dict[uuid.UUID, set[Subscriber]] = defaultdict(set)

    def deliver(self, rows: list[LoggedEvent], epoch: str) -> None:
        """Hand freshly read rows to the sockets that care, each socket its rows at once."""
        frames: dict[Subscriber, list[LoggedEvent]] = defaultdict(list)
        delivered = 0
        for row in rows:
            if row.kind == SOCKET_DISCONNECT:  # one socket of the session; each asks "me?"
                code = int(row.data.get("close_code", CloseCode.DISCONNECTED))
                for subscriber in list(self.by_session.get(row.session_id, ())):
                    subscriber.log_disconnected(str(row.data.get("channel_name", "")), code, row.at.timestamp())
            elif row.kind in CONTROL_KINDS:
                # A snapshot of this session in this process's cache is stale now.
                access_cache_drop_local([row.session_id])
                targets = self.by_session.get(row.session_id, set()) | self.by_token_session.get(row.session_id, set())
                for subscriber in targets:
                    if row.kind == SESSION_ENDED:
                        code = int(row.data.get("close_code", CloseCode.SESSION_ENDED))
                        subscriber.log_ended(code, str(row.data.get("reason", "")), row.at.timestamp())
                    elif row.kind == ACCESS_CHANGED:
                        subscriber.log_access_changed(str(row.data.get("role", "")))
                delivered += len(targets)
            else:
                for subscriber in self.by_session.get(row.session_id, ()):
                    frames[subscriber].append(row)
        for subscriber, events in frames.items():
            subscriber.log_events(events, epoch)
            delivered += len(events)
        if delivered:
            EVENT_TAIL_DELIVERED.inc(delivered)

    def live(self, session_id: uuid.UUID, frame: dict[str, Any]) -> None:
        """A live frame (an agent's token) to the sockets of its session."""
        for subscriber in list(self.by_session.get(session_id, ())):
            subscriber.live_frame(frame)

    def subscribe(self, subscriber: Subscriber, *, session_id: uuid.UUID, token_session_id: uuid.UUID) -> None:
        self.by_session[session_id].add(subscriber)
        if token_session_id != session_id:
            self.by_token_session[token_session_id].add(subscriber)

    def unsubscribe(self, subscriber: Subscriber, *, session_id: uuid.UUID, token_session_id: uuid.UUID) -> None:
        for index, key in ((self.by_session, session_id), (self.by_token_session, token_session_id)):
            members = index.get(key)
            if members is not None:
                members.discard(subscriber)
                if not members:
                    del index[key]
