"""The periodic re-check shared by the sockets of one key (`realtime.rechecks`), driven on
`OpenSocket`s whose timers came due together, through the consumer's own translation of
errors. The database checks are counted at `claims_resolve`, the re-check's one query."""

from __future__ import annotations

import asyncio
import dataclasses
import types
import uuid
from datetime import datetime, timezone
from typing import Any

import pytest
from channels.db import database_sync_to_async

from accounts.models import Membership, Role
from accounts.tokens import ACCESS, TokenClaims, token_decode, tokens_issue
from core.exceptions import CloseCode, SessionEnded
from realtime import grants, rechecks
from realtime.consumers import RuntimeAgentConsumer
from realtime.grants import SocketGrant, socket_authorize
from realtime.protocol import auth_refresh
from realtime.socket import OpenSocket
from sessions_runtime.models import RuntimeSession, SessionStatus
from tests.sockets import login_new_user

pytestmark = pytest.mark.django_db(transaction=True)


class Recorded:
    """A transport that records its close; errors go through the consumer's `guarded`."""

    guarded = RuntimeAgentConsumer.guarded

    def __init__(self) -> None:
        self.channel_name = f"test.{uuid.uuid4().hex}"
        self.closed: tuple[int, str] | None = None

    async def send_frame(self, frame: dict[str, Any]) -> None:
        pass

    async def drained(self) -> None:
        pass

    async def close_with(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


@pytest.fixture
def checks(monkeypatch) -> list[Any]:
    """The claims of each database check the re-checks make (not the handshakes')."""
    made: list[Any] = []
    resolve = grants.claims_resolve

    def counted(claims, **kwargs):
        if not kwargs.get("for_socket"):
            made.append(claims)
        return resolve(claims, **kwargs)

    monkeypatch.setattr(grants, "claims_resolve", counted)
    return made


async def granted(access_token: str, session_id: str | None = None) -> SocketGrant:
    claims = token_decode(access_token, expected_type=ACCESS)
    session = uuid.UUID(session_id) if session_id else claims.session_id
    return await database_sync_to_async(socket_authorize)(claims=claims, session_id=session)


def sockets_of(grant: SocketGrant, count: int) -> list[OpenSocket]:
    """`count` open sockets holding `grant`, each with a log position of its own."""
    sockets = []
    for seq in range(count):
        socket = OpenSocket(Recorded())
        socket.opening = False  # as after `session.ready`
        socket.grant = dataclasses.replace(grant, event_seq=grant.event_seq + seq)
        sockets.append(socket)
    return sockets


async def checked(sockets: list[OpenSocket]) -> None:
    """Their timers came due in the same turn of the loop; wait for every check."""
    try:
        await asyncio.gather(*(socket._check() for socket in sockets))
    finally:
        stopped(sockets)


def stopped(sockets: list[OpenSocket]) -> None:
    """No timer left behind (these sockets were never opened: nothing else to give back)."""
    for socket in sockets:
        socket.gone = True
        if socket.timer is not None:
            socket.timer.cancel()


@database_sync_to_async
def end_behind_the_services_back(session_id: Any) -> None:
    RuntimeSession.objects.filter(pk=session_id).update(status=SessionStatus.ENDED)


async def test_sockets_of_one_session_due_together_make_one_database_check(checks):
    _, body = await login_new_user()
    grant = await granted(body["access_token"])
    sockets = sockets_of(grant, 5)
    await checked(sockets)
    assert len(checks) == 1, checks
    assert [socket.transport.closed for socket in sockets] == [None] * 5
    # Only the database's answer is shared: each keeps its own claims and log position.
    assert [socket.grant.event_seq for socket in sockets] == [grant.event_seq + n for n in range(5)]
    assert all(socket.grant.claims is grant.claims for socket in sockets)
    assert all(socket.timer is not None for socket in sockets)  # re-armed before `checked` stopped it


async def test_a_session_ended_without_an_event_closes_every_socket_of_it_from_one_check(checks):
    _, body = await login_new_user()
    sockets = sockets_of(await granted(body["access_token"]), 5)
    await end_behind_the_services_back(body["session_id"])
    await checked(sockets)
    assert len(checks) == 1, checks
    assert [socket.transport.closed for socket in sockets] == [(CloseCode.SESSION_ENDED, SessionEnded.code)] * 5


async def test_a_refresh_is_checked_on_its_own_claims_not_on_a_shared_answer(checks):
    _, body = await login_new_user()
    sockets = sockets_of(await granted(body["access_token"]), 3)
    await checked(sockets)
    assert len(checks) == 1, checks
    # Ended after the shared check, well within the time its answer is shared: a refresh
    # served that answer would carry on.
    session = await database_sync_to_async(RuntimeSession.objects.get)(pk=body["session_id"])
    fresh = tokens_issue(session=session, record=False).access_token
    await end_behind_the_services_back(body["session_id"])
    refreshing = sockets[0]
    refreshing.gone = False
    with pytest.raises(SessionEnded):
        await auth_refresh(refreshing, {"type": "auth.refresh", "access_token": fresh})
    assert len(checks) == 2, checks
    assert checks[1].jti == token_decode(fresh, expected_type=ACCESS).jti != checks[0].jti


async def test_sockets_of_two_sessions_do_not_share_a_check(checks):
    _, first = await login_new_user()
    _, second = await login_new_user()
    ending = sockets_of(await granted(first["access_token"]), 3)
    staying = sockets_of(await granted(second["access_token"]), 3)
    await end_behind_the_services_back(first["session_id"])
    await checked(ending + staying)
    assert sorted(str(claims.session_id) for claims in checks) == sorted([first["session_id"], second["session_id"]])
    assert all(socket.transport.closed[0] == CloseCode.SESSION_ENDED for socket in ending)
    assert [socket.transport.closed for socket in staying] == [None] * 3


async def test_a_role_change_a_socket_applied_is_not_undone_by_a_shared_read_older_than_it(monkeypatch, checks):
    user, body = await login_new_user()
    first, changed, other = sockets_of(await granted(body["access_token"]), 3)
    old_role = first.grant.role
    resolve = grants.claims_resolve

    def read_then_demoted(claims, **kwargs):
        answer = resolve(claims, **kwargs)
        if len(checks) == 1:  # the shared read: the role changes right after it
            Membership.objects.filter(user=user).update(role=Role.VIEWER)
        return answer

    monkeypatch.setattr(grants, "claims_resolve", read_then_demoted)

    async def hears_the_change_then_checks() -> None:
        changed.log_access_changed(Role.VIEWER)  # the event, before its timer came due
        await changed._check()

    try:
        await asyncio.gather(first._check(), hears_the_change_then_checks(), other._check())
    finally:
        stopped([first, changed, other])
    assert changed.grant.role == Role.VIEWER != old_role
    assert other.grant.role == old_role  # it shared the read, as it heard of no change
    assert len(checks) == 2, checks  # the shared read and `changed`'s own


def a_grant(number: int) -> SocketGrant:
    """A grant of a key of its own, far from any expiry (no database needed)."""
    ids = [uuid.UUID(int=number * 4 + part) for part in range(4)]
    far = datetime(2100, 1, 1, tzinfo=timezone.utc)
    claims = TokenClaims(token_type=ACCESS, user_id=ids[0], tenant_id=ids[1], session_id=ids[2], jti="j",
                         expires_at=far)
    return SocketGrant(user_id=ids[0], tenant_id=ids[1], session_id=ids[3], session_expires_at=far, role="member",
                       claims=claims)


def test_the_sockets_of_a_key_come_due_together_within_one_interval_and_keys_spread(monkeypatch):
    """Opened at different moments, the sockets of one key re-check at one instant (one
    shared check); another key at another; none waits longer than the interval (30 s)."""
    clock = types.SimpleNamespace(now=1_000_000.0)
    monkeypatch.setattr(rechecks, "time", types.SimpleNamespace(time=lambda: clock.now))

    def due(grant: SocketGrant, opened: float) -> float:
        clock.now = opened
        delay = rechecks.recheck_delay(grant)
        assert 0 < delay <= 30
        return round(opened + delay, 6)

    grant = a_grant(1)
    assert len({due(grant, opened) for opened in (1_000_000.0, 1_000_004.5, 1_000_017.25)}) == 1
    # After its check, the next one a whole interval later, at the same phase.
    first = due(grant, 1_000_000.0)
    assert due(grant, first + 0.2) == pytest.approx(first + 30)
    assert len({due(a_grant(number), 1_000_000.0) for number in range(2, 12)}) > 5


async def test_a_draining_process_checks_nothing_more(checks, monkeypatch):
    """Its sockets are about to get 1012: in a 10,000-socket drain, their re-checks were a
    third of the database thread's time, holding the GIL the closes needed."""
    monkeypatch.setattr("realtime.drain._draining", True)
    _, body = await login_new_user()
    sockets = sockets_of(await granted(body["access_token"]), 3)
    await checked(sockets)
    assert checks == [] and [socket.transport.closed for socket in sockets] == [None] * 3
