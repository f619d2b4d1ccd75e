"""The socket protocol in machine form: /asyncapi.json, its coverage of the frame table and
the domain's events, the close codes, and the TypeScript client's committed copies."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from rest_framework.test import APIClient

from core.exceptions import CloseCode
from realtime.asyncapi import asyncapi_document, message_name
from realtime.management.commands.socket_schema import committed_copies
from realtime.protocol import FRAMES
from sessions_runtime import answers
from sessions_runtime.executions import EXECUTION_EVENTS
from sessions_runtime.state_writes import SESSION_STATE_CHANGED
from tests.frames import FrameLog, frame_problem

REGENERATE = "regenerate with `.venv/bin/python manage.py socket_schema --write` and commit clients/js/schema/"


def messages(direction: str) -> set[str]:
    return {name for name, message in asyncapi_document()["components"]["messages"].items()
            if message["x-direction"] == direction}


def test_every_client_frame_type_has_a_message():
    assert messages("client") == set(FRAMES)


def test_every_event_type_of_the_domain_has_a_message():
    domain = {*EXECUTION_EVENTS, SESSION_STATE_CHANGED, *(getattr(answers, name) for name in dir(answers)
                                                          if name.startswith("AGENT_") and name.isupper())}
    events = {name.removeprefix("runtime_event.") for name in messages("server") if name.startswith("runtime_event.")}
    assert events == domain
    assert {"session.ready", "pong", "server.restart", "auth.refreshed", "intent.accepted", "error"} == messages("server") - {
        message_name("runtime_event", kind) for kind in events}


def test_replayable_events_require_their_position_and_live_ones_have_none():
    schemas = asyncapi_document()["components"]["schemas"]
    for kind in ("agent.token", "agent.snapshot"):
        assert "seq" not in schemas[asyncapi_document()["components"]["messages"][f"runtime_event.{kind}"]["title"]][
            "properties"]
    started = schemas["EventAgentStarted"]
    assert {"seq", "epoch"} <= set(started["required"]) and started["x-replayable"] is True


def test_a_broken_field_or_an_unknown_frame_is_a_problem():
    ready = {"type": "session.ready", "session_id": "5d0c8a7e-8d7f-4c9b-9d43-3b1f7c1f0b21",
             "user_id": "5d0c8a7e-8d7f-4c9b-9d43-3b1f7c1f0b22", "tenant_id": "5d0c8a7e-8d7f-4c9b-9d43-3b1f7c1f0b23",
             "expires_at": "2026-01-01T00:00:00+00:00", "token_expires_at": "2026-01-01T00:00:00+00:00",
             "heartbeat_s": 25, "seq": 0, "epoch": "e"}
    assert frame_problem(ready, direction="server") is None
    assert "heartbeat_s" in frame_problem({**ready, "heartbeat_s": "25"}, direction="server")
    assert "extra" in frame_problem({**ready, "extra": 1}, direction="server")
    assert "expires_at" in frame_problem({**ready, "expires_at": "tomorrow"}, direction="server")
    assert "no server message" in frame_problem({"type": "session.gone"}, direction="server")
    assert "no server message" in frame_problem({"type": "runtime_event", "event_type": "x.y"}, direction="server")
    assert "no client message" in frame_problem({"type": "pong"}, direction="client")
    log = FrameLog()
    log.check({**ready, "seq": -1}, direction="server")
    assert len(log.problems) == 1 and '"seq": -1' in log.problems[0]


def test_close_codes_are_the_servers_and_the_docs_table():
    listed = {row["code"]: row for row in asyncapi_document()["x-close-codes"]}
    assert {int(code) for code in CloseCode} <= set(listed)
    assert all(row["action"] in {"refresh", "stop", "backoff", "slow", "restart"} for row in listed.values())
    assert listed[4401]["name"] == "UNAUTHENTICATED" and listed[4409]["action"] == "stop"
    table = (Path(settings.BASE_DIR) / "docs" / "protocol.md").read_text()
    documented = {int(code) for code in re.findall(r"^\| (\d{4})\b", table, re.M)}
    documented |= {int(code) for code in re.findall(r"^\| 1002, (1007)", table, re.M)} | {1002}
    assert set(listed) <= documented | {1000}


def test_the_document_is_served_without_credentials_and_cacheable(db):
    client = APIClient()
    response = client.get("/asyncapi.json")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert "public" in response["Cache-Control"] and "max-age" in response["Cache-Control"]
    assert json.loads(response.content) == asyncapi_document()
    assert json.loads(response.content)["channels"]["runtimeAgent"]["address"] == "/api/runtime/agent"
    assert client.get("/asyncapi.json", HTTP_IF_NONE_MATCH=response["ETag"]).status_code == 304
    assert client.post("/asyncapi.json").status_code == 405


def test_the_typescript_clients_copies_are_what_the_server_generates(db):
    for path, expected in committed_copies().items():
        assert path.exists(), f"{path} is missing: {REGENERATE}"
        assert json.loads(path.read_text(encoding="utf-8")) == json.loads(expected), f"{path} is stale: {REGENERATE}"
    served = APIClient().get("/openapi.json").json()
    committed = Path(settings.BASE_DIR) / "clients" / "js" / "schema" / "openapi.json"
    assert json.loads(committed.read_text(encoding="utf-8")) == served, f"{committed} is stale: {REGENERATE}"


@pytest.mark.parametrize("message", [
    {"type": "ping", "id": 7}, {"type": "auth.refresh", "access_token": "t", "id": "a"},
    {"type": "intent.submit", "intent_type": "echo", "parameters": {}, "idempotency_key": None},
    {"type": "agent.message", "payload": {"text": "hi", "context": {}}, "conversation_id": "c"},
    {"type": "agent.cancel", "message_id": "5d0c8a7e-8d7f-4c9b-9d43-3b1f7c1f0b21"},
])
def test_the_documented_client_frames_validate(message):
    assert frame_problem(message, direction="client") is None
    assert frame_problem({**message, "id": True}, direction="client") is not None


def test_the_command_prints_the_document_and_writes_both_copies(tmp_path, settings, db):
    out = io.StringIO()
    call_command("socket_schema", stdout=out)
    assert json.loads(out.getvalue()) == asyncapi_document()
    settings.BASE_DIR = tmp_path
    call_command("socket_schema", "--write", stdout=io.StringIO())
    written = tmp_path / "clients" / "js" / "schema"
    assert json.loads((written / "asyncapi.json").read_text()) == asyncapi_document()
    assert json.loads((written / "openapi.json").read_text()) == APIClient().get("/openapi.json").json()
