"""Conversation state obeys STATE_MAX_BYTES like every other state write; answers in flight
keep their bound and end once, whoever ends them."""

from __future__ import annotations

import uuid

import pytest
from rest_framework.test import APIClient

from core.exceptions import InvalidRequest
from sessions_runtime.agents import agent_message_parse, conversation_append, conversation_history
from sessions_runtime.models import RuntimeSession
from sessions_runtime.state import CONVERSATION_NAMESPACE, state_backend, state_key, state_size
from tests import factories

pytestmark = pytest.mark.django_db


def _session() -> RuntimeSession:
    body = factories.login(APIClient(), factories.make_user())
    return RuntimeSession.objects.get(pk=body["session_id"])


def test_many_conversations_stay_within_state_max_bytes_dropping_the_oldest(settings):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "STATE_MAX_BYTES": 4096}
    session = _session()
    ids = {"tenant_id": session.tenant_id, "session_id": session.pk}
    for n in range(40):
        conversation_append(**ids, conversation_id=f"c{n}", turns=[{"role": "user", "text": "x" * 200},
                                                                    {"role": "agent", "text": "y" * 200}])
    document = state_backend().read(state_key(**ids, namespace=CONVERSATION_NAMESPACE))
    assert state_size(document.data) <= 4096
    assert "c39" in document.data and "c0" not in document.data
    assert len(conversation_history(**ids, conversation_id="c39")) == 2


def test_one_long_conversation_drops_its_oldest_exchanges(settings):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "STATE_MAX_BYTES": 4096}
    session = _session()
    ids = {"tenant_id": session.tenant_id, "session_id": session.pk}
    for n in range(20):
        conversation_append(**ids, conversation_id="c", turns=[{"role": "user", "text": f"{n}:" + "x" * 200},
                                                               {"role": "agent", "text": "y" * 200}])
    history = conversation_history(**ids, conversation_id="c")
    assert 2 <= len(history) < 40 and history[-2]["text"].startswith("19:")
    assert state_size(state_backend().read(state_key(**ids, namespace=CONVERSATION_NAMESPACE)).data) <= 4096


def test_an_exchange_larger_than_the_limit_is_not_saved(settings):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "STATE_MAX_BYTES": 1024}
    session = _session()
    ids = {"tenant_id": session.tenant_id, "session_id": session.pk}
    conversation_append(**ids, conversation_id="c", turns=[{"role": "user", "text": "x" * 2000}])
    assert conversation_history(**ids, conversation_id="c") == ()


def test_a_conversation_keeps_agent_history_max_turns(settings):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "AGENT_HISTORY_MAX_TURNS": 4}
    session = _session()
    ids = {"tenant_id": session.tenant_id, "session_id": session.pk}
    for n in range(5):
        conversation_append(**ids, conversation_id="c", turns=[{"role": "user", "text": f"{n}"},
                                                               {"role": "agent", "text": f"{n}"}])
    assert [turn["text"] for turn in conversation_history(**ids, conversation_id="c")] == ["3", "3", "4", "4"]


def test_an_agent_message_longer_than_agent_message_max_chars_is_refused(settings):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "AGENT_MESSAGE_MAX_CHARS": 10}
    caller = factories.caller_for(_session())
    assert agent_message_parse({"payload": {"text": "x" * 10}}, caller=caller)[0] == "x" * 10
    with pytest.raises(InvalidRequest, match="1 to 10 characters"):
        agent_message_parse({"payload": {"text": "x" * 11}}, caller=caller)


# --- Answers in flight: their rows and their one terminal event ----------------------------
def _start(session: RuntimeSession, *, instance: str = "here") -> str:
    from sessions_runtime.answers import agent_answer_start

    return str(agent_answer_start(caller=factories.caller_for(session), conversation_id="c", question="q",
                                  server_instance=instance).pk)


def _agent_events(session: RuntimeSession) -> list[tuple[str, str, str | None]]:
    from core.models import SessionEvent

    rows = SessionEvent.objects.filter(session_id=session.pk).order_by("seq").values_list("kind", "data")
    return [(kind, data.get("message_id"), data.get("reason")) for kind, data in rows]


def test_the_per_user_bound_counts_answers_in_flight_on_every_process(settings):
    from core.exceptions import TooManyAnswers
    from sessions_runtime.models import AgentAnswer

    settings.SYMPHAINY = {**settings.SYMPHAINY, "AGENT_ANSWERS_PER_USER": 2}
    session = _session()
    _start(session, instance="a")
    _start(session, instance="b")
    with pytest.raises(TooManyAnswers):
        _start(session, instance="c")
    assert AgentAnswer.objects.count() == 2 and len(_agent_events(session)) == 2


def test_the_sweep_fails_answers_of_dead_processes_and_past_their_lease_once(settings):
    from datetime import timedelta

    from django.utils import timezone

    from sessions_runtime.answers import agent_answer_finish, agent_answers_sweep
    from sessions_runtime.models import AgentAnswer

    session = _session()
    expired, dead, alive = _start(session), _start(session, instance="dead"), _start(session)
    AgentAnswer.objects.filter(pk=expired).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert agent_answers_sweep(dead=["dead"]) == 2
    assert agent_answers_sweep(dead=["dead"]) == 0
    # The running process, late, cannot end them a second time.
    assert not agent_answer_finish(answer_id=expired, session_id=session.pk, kind="agent.completed", data={})
    assert list(AgentAnswer.objects.values_list("pk", flat=True)) == [uuid.UUID(alive)]
    failed = [(m, r) for kind, m, r in _agent_events(session) if kind == "agent.failed"]
    assert sorted(failed) == sorted([(expired, "interrupted"), (dead, "interrupted")])


def test_ending_the_session_fails_its_answers_before_its_end_event():
    from core.caller import Caller
    from sessions_runtime.models import AgentAnswer, EndReason
    from sessions_runtime.services import session_end

    session = _session()
    message_id = _start(session)
    session_end(session_id=session.pk, reason=EndReason.DELETED, caller=Caller.system())
    assert _agent_events(session) == [("agent.started", message_id, None), ("agent.failed", message_id, "session_ended"),
                                      ("session.ended", None, "deleted")]
    assert not AgentAnswer.objects.exists()


def test_a_step_writes_whole_then_appended_text_and_renews_the_lease(django_assert_max_num_queries):
    from datetime import timedelta

    from django.utils import timezone

    from sessions_runtime.answers import GO_ON, Progress, agent_answers_step
    from sessions_runtime.models import AgentAnswer

    session = _session()
    ids = [uuid.UUID(_start(session)) for _ in range(3)]
    AgentAnswer.objects.update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    agent_answers_step(progress=[Progress(answer_id=ids[0], text="it's ", next_index=1),
                                 Progress(answer_id=ids[1], text="ab", next_index=2)])
    # Appended to one, the whole text again for the other (as after a failed write), and
    # the third only checked: its lease is renewed by the check.
    with django_assert_max_num_queries(8):  # two writes, whatever the number of rows
        verdicts = agent_answers_step(progress=[Progress(answer_id=ids[0], text="'quoted' ", next_index=3, append=True),
                                                Progress(answer_id=ids[1], text="abc", next_index=3)], check=ids)
    assert verdicts == dict.fromkeys(ids, GO_ON)
    rows = {row.pk: row for row in AgentAnswer.objects.all()}
    assert (rows[ids[0]].text, rows[ids[0]].next_index, rows[ids[0]].writes) == ("it's 'quoted' ", 3, 2)
    assert (rows[ids[1]].text, rows[ids[1]].next_index, rows[ids[1]].writes) == ("abc", 3, 2)
    assert (rows[ids[2]].text, rows[ids[2]].next_index, rows[ids[2]].writes) == ("", 0, 1)
    assert all(row.lease_expires_at > timezone.now() for row in rows.values())
