"""Handshakes that reach the database together are checked together
(`realtime.handshake`, `realtime.grants.sockets_authorize`): their tokens' sessions in one
query, each refused (or not) on its own, as it would be alone."""

from __future__ import annotations

import asyncio

import pytest

from accounts.tokens import ACCESS, token_decode
from core.exceptions import SessionEnded
from realtime import handshake
from realtime.grants import SocketGrant, sockets_authorize
from sessions_runtime.access import access_cache_clear
from sessions_runtime.models import RuntimeSession, SessionStatus
from tests import factories
from tests.sockets import login_new_user, make_socket

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_batch_reads_its_sessions_in_one_query_and_refuses_each_on_its_own(django_assert_num_queries):
    bodies = [factories.as_user()[1] for _ in range(4)]
    RuntimeSession.objects.filter(pk=bodies[1]["session_id"]).update(status=SessionStatus.ENDED)
    claims = [token_decode(body["access_token"], expected_type=ACCESS) for body in bodies]
    with django_assert_num_queries(1):
        answers = sockets_authorize([(c, c.session_id) for c in claims])
    assert isinstance(answers[1], SessionEnded)
    granted = [answers[n] for n in (0, 2, 3)]
    assert all(isinstance(grant, SocketGrant) for grant in granted)
    assert [str(grant.session_id) for grant in granted] == [bodies[n]["session_id"] for n in (0, 2, 3)]


async def test_handshakes_of_many_sessions_arriving_together_are_checked_in_few_batches(monkeypatch):
    bodies = [(await login_new_user())[1] for _ in range(12)]
    access_cache_clear()  # every handshake asks the database, as in a restarted process
    batches: list[int] = []
    authorize = handshake.sockets_authorize

    def counted(requests):
        batches.append(len(requests))
        return authorize(requests)

    monkeypatch.setattr(handshake, "sockets_authorize", counted)
    sockets = await asyncio.gather(*(make_socket(body["access_token"]).open() for body in bodies))
    frames = await asyncio.gather(*(sock.receive() for sock in sockets))
    assert [frame["type"] for frame in frames] == ["session.ready"] * 12
    assert sum(batches) == 12 and len(batches) < 12, batches
    await asyncio.gather(*(sock.close() for sock in sockets))
