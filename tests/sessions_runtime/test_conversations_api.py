"""The agent conversations over REST: read like the session's state, paginated, with the
answers in flight, so a frontend can rebuild the chat after a reload."""

from __future__ import annotations

import uuid

import pytest

from accounts.models import Role
from sessions_runtime.agents import conversation_append
from sessions_runtime.answers import agent_answer_start
from sessions_runtime.models import RuntimeSession
from tests import factories
from tests.factories import as_user

pytestmark = pytest.mark.django_db


def url(session_id: str, conversation_id: str | None = None) -> str:
    return f"/api/session/{session_id}/conversations" + (f"/{conversation_id}" if conversation_id else "")


def talk(session_id: str, conversation_id: str, exchanges: int) -> None:
    session = RuntimeSession.objects.get(pk=session_id)
    for n in range(exchanges):
        conversation_append(tenant_id=session.tenant_id, session_id=session.pk, conversation_id=conversation_id,
                            turns=[{"role": "user", "text": f"q{n}"}, {"role": "agent", "text": f"A{n}"}])


def test_a_conversation_reads_oldest_first_in_pages_with_its_answer_in_flight():
    api, body, _ = as_user()
    talk(body["session_id"], "chat", 3)
    session = RuntimeSession.objects.get(pk=body["session_id"])
    answer = agent_answer_start(caller=factories.caller_for(session), conversation_id="chat", question="q3",
                                server_instance="here")
    first = api.get(url(body["session_id"], "chat"), {"page_size": 4}).json()
    assert first["count"] == 6 and first["next"] and first["previous"] is None
    assert [turn["text"] for turn in first["results"]] == ["q0", "A0", "q1", "A1"]
    assert first["in_flight"] == [{"message_id": str(answer.pk), "question": "q3", "text": "", "next_index": 0}]
    second = api.get(first["next"]).json()
    assert [turn["text"] for turn in second["results"]] == ["q2", "A2"] and second["next"] is None
    listing = api.get(url(body["session_id"])).json()
    assert [(c["conversation_id"], c["turns"], c["answers_in_flight"]) for c in listing["results"]] == [("chat", 6, 1)]


def test_a_tenant_admin_reads_a_members_conversation_another_user_gets_404():
    tenant = factories.make_tenant()
    _, member, _ = as_user(tenant=tenant)
    admin_api, _, _ = as_user(tenant=tenant, role=Role.ADMIN)
    stranger_api, _, _ = as_user()
    talk(member["session_id"], "chat", 1)
    assert admin_api.get(url(member["session_id"], "chat")).status_code == 200
    bodies = []
    for path in (url(member["session_id"], "chat"), url(member["session_id"]), url(str(uuid.uuid4()), "chat")):
        response = stranger_api.get(path)
        assert response.status_code == 404
        bodies.append(response.json()["error"])
    assert set(bodies) == {"not_found"}


def test_an_unknown_conversation_is_404_and_the_endpoints_are_in_the_schema(api):
    own_api, body, _ = as_user()
    assert own_api.get(url(body["session_id"], "nothing-here")).status_code == 404
    assert own_api.get(url(body["session_id"])).json()["results"] == []
    paths = api.get("/openapi.json").json()["paths"]
    assert "/api/session/{session_id}/conversations" in paths
    assert "/api/session/{session_id}/conversations/{conversation_id}" in paths
