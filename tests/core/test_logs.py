"""Every field of every log record is redacted, with the JSON formatter as configured."""

from __future__ import annotations

import io
import json
import logging
import logging.config

import pytest
from django.conf import settings

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2VjcmV0LXNpZ25hdHVyZS12YWx1ZQ"


@pytest.fixture
def json_log():
    """The project's `json` formatter and filters on a handler writing to a buffer."""
    config = settings.LOGGING
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    formatter_config = dict(config["formatters"]["json"])
    factory = formatter_config.pop("()")
    module, _, name = factory.rpartition(".")
    handler.setFormatter(getattr(__import__(module, fromlist=[name]), name)(**formatter_config))
    for key in config["handlers"]["console"]["filters"]:
        spec = dict(config["filters"][key])
        module, _, name = spec.pop("()").rpartition(".")
        handler.addFilter(getattr(__import__(module, fromlist=[name]), name)(**spec))
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


@pytest.mark.django_db
def test_a_django_request_line_for_a_tokened_path_carries_no_token(client, json_log):
    assert client.get(f"/api/no-such-path?access_token={TOKEN}").status_code == 404
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    request_lines = [line for line in lines if line.get("logger") == "django.request"]
    assert request_lines, lines
    assert "request" in request_lines[0]  # the field is still there, redacted
    assert TOKEN not in json_log.getvalue()
    assert "[redacted]" in json_log.getvalue()


def test_extra_fields_exceptions_and_arguments_are_redacted(json_log):
    logger = logging.getLogger("tests.logs")
    try:
        raise ValueError(f"could not open /ws?access_token={TOKEN}")
    except ValueError:
        logger.exception("failed for %s", f"Bearer {TOKEN}", extra={"url": f"/x?token={TOKEN}", "count": 3})
    output = json_log.getvalue()
    assert TOKEN not in output
    line = json.loads(output.splitlines()[-1])
    assert line["count"] == 3
    assert "ValueError" in line["exc_info"]


def test_a_bare_jwt_is_redacted_in_the_message_arguments_extra_fields_and_traceback(json_log):
    """No `token=` or `Bearer` before it: the token alone, as an exception's text quotes it."""
    logger = logging.getLogger("tests.logs")
    try:
        try:
            raise KeyError(TOKEN)
        except KeyError as inner:
            raise RuntimeError(f"the upstream refused {TOKEN}: expired") from inner
    except RuntimeError:
        logger.exception("call failed with %s", TOKEN, extra={"credential": TOKEN, "detail": {"jwt": TOKEN}})
    output = json_log.getvalue()
    assert TOKEN not in output
    assert TOKEN.split(".")[2] not in output  # not even the signature alone
    line = json.loads(output.splitlines()[-1])
    assert line["message"] == "call failed with [redacted]"
    assert line["credential"] == "[redacted]"
    assert "RuntimeError: the upstream refused [redacted]: expired" in line["exc_info"]
    assert "KeyError: '[redacted]'" in line["exc_info"]  # the chained cause too


def test_a_jwt_inside_a_word_or_a_plain_dotted_name_is_left_alone(json_log):
    logging.getLogger("tests.logs").warning("module eyJ.settings and version 1.2.3 and keyJ%s", TOKEN[3:])
    line = json.loads(json_log.getvalue().splitlines()[-1])
    assert line["message"] == f"module eyJ.settings and version 1.2.3 and keyJ{TOKEN[3:]}"


async def tokened_handler(ctx) -> None:
    """A handler whose failure quotes the caller's credential (as an HTTP client's error might)."""
    raise RuntimeError(f"401 from upstream for {ctx.parameters['credential']}")


async def tokened_agent(message):
    yield "partial "
    raise RuntimeError(f"the model API rejected {message.context['credential']}")


@pytest.mark.django_db(transaction=True)
def test_a_handlers_exception_is_logged_without_the_token_it_quotes(settings, json_log):
    from rest_framework.test import APIClient

    from core.conf import runtime_settings
    from tests import factories
    from tests.sessions_runtime.test_executions import finished

    handlers = {**runtime_settings.INTENT_HANDLERS, "tokened": f"{__name__}.tokened_handler"}
    settings.SYMPHAINY = {**settings.SYMPHAINY, "INTENT_HANDLERS": handlers}
    body = factories.login(APIClient(), factories.make_user())
    token = body["access_token"]
    api = factories.bearer(APIClient(), token)
    response = api.post("/api/intent/submit", {"session_id": body["session_id"], "intent_type": "tokened",
                                               "parameters": {"credential": token}}, format="json")
    assert response.status_code == 202, response.content
    # The runner logs the failure before it records it.
    assert finished(response.json()["execution_id"]).status == "failed"
    output = json_log.getvalue()
    failed = [json.loads(line) for line in output.splitlines() if "401 from upstream" in line]
    assert failed and "401 from upstream for [redacted]" in failed[0]["message"], output
    assert "401 from upstream for [redacted]" in failed[0]["exc_info"]
    assert token not in output


@pytest.mark.django_db(transaction=True)
def test_an_agents_exception_is_logged_without_the_token_it_quotes(settings, json_log):
    import asyncio

    from rest_framework.test import APIClient

    from sessions_runtime.agents import agent_message_run
    from sessions_runtime.models import RuntimeSession
    from tests import factories

    settings.SYMPHAINY = {**settings.SYMPHAINY, "AGENT_HANDLER": f"{__name__}.tokened_agent"}
    user = factories.make_user()
    token = factories.login(APIClient(), user)["access_token"]
    caller = factories.caller_for(RuntimeSession.objects.filter(user=user).get())
    asyncio.run(agent_message_run(caller=caller, text="hello", context={"credential": token}, conversation_id="c1"))
    output = json_log.getvalue()
    failed = [json.loads(line) for line in output.splitlines() if "agent failed" in line]
    assert failed and "the model API rejected [redacted]" in failed[0]["exc_info"], output
    assert token not in output
