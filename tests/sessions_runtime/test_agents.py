"""Conversation state obeys STATE_MAX_BYTES like every other state write."""

from __future__ import annotations

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
