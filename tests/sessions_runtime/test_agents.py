"""Conversation state obeys STATE_MAX_BYTES like every other state write."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from sessions_runtime.agents import conversation_append, conversation_history
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
