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
