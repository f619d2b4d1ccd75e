"""The REST schema tells the truth: schemathesis (every check, the stateful phase too)
against a real server, and the shapes and refusals it found wrong, pinned one by one."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from sessions_runtime.apis import IF_MATCH_PATTERN
from tests import factories
from tests.live import child_env, running

pytestmark = pytest.mark.django_db(transaction=True)

# The run's configuration. Every check runs (schemathesis' default; `--checks all` on the
# command line would override the per-operation settings below); where one cannot hold,
# the reason is beside it.
CONFIG = """
hooks = "tests.schemathesis_hooks"   # a fresh login whenever the token stops working
workers = 1
max-failures = 20
warnings = false
generation.max-examples = 5          # CI's budget: the run takes ~45 s on a busy 2-core machine
generation.database = "none"

[checks.missing_required_header]
# A PUT or PATCH of the state without If-Match is 428 Precondition Required (RFC 6585),
# the status made for exactly this; schemathesis expects a generic 4xx.
expected-statuses = [400, 401, 403, 406, 415, 422, 428]

[checks.positive_data_acceptance]
# A schema-valid request can still meet the current state: a stale If-Match version (412),
# an idempotency key already used with another body (422). Both are documented answers.
expected-statuses = ["2xx", "3xx", 401, 403, 404, 409, 412, 422, 429, "5xx"]

[checks.use_after_free]
# DELETE /api/session/{id} ends the session; the contract keeps it readable with status
# "ended" (and its files and state with it), so a read after the DELETE is rightly 200.
enabled = false

[[operations]]
include-path = "/api/auth/register"
# Django's password rules (not too common, not all digits, not like the email) cannot be
# written in JSON Schema; the schema states them in the field's description.
checks.positive_data_acceptance.enabled = false

[[operations]]
include-path = "/api/auth/refresh"
# `refresh_token` is required unless the X-Symphainy-Refresh header asks for the cookie (and
# must be absent then): a rule between a header and the body JSON Schema cannot write down.
checks.positive_data_acceptance.enabled = false

[[operations]]
include-path = "/api/intent/submit"
# Each handler checks its own `parameters`, and the Idempotency-Key header must equal the
# body's idempotency_key when both are sent: rules JSON Schema cannot write down.
checks.positive_data_acceptance.enabled = false
"""


@pytest.mark.server
def test_schemathesis_finds_nothing_against_a_real_server(tmp_path):
    user = factories.make_user()
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    # The run logs in again after each logout it makes; nothing else in it may throttle that.
    # The refresh cookie on, so that its header, cookie and answers are exercised too.
    with running(tmp_path, THROTTLE_LOGIN_ADDRESS="100000/min", AUTH_REFRESH_COOKIE="1") as server:
        env = child_env(
            SCHEMA_TEST_BASE_URL=server.http, SCHEMA_TEST_EMAIL=user.email, SCHEMA_TEST_PASSWORD=factories.PASSWORD,
            NO_COLOR="1",
        )
        st = Path(sys.executable).with_name("st")
        result = subprocess.run(
            [str(st), "--config-file", str(config), "run", f"{server.http}/openapi.json",
             "--phases", "coverage,fuzzing,stateful", "--seed", "1"],
            check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
        )
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
    assert "Stateful" in result.stdout, result.stdout[-5000:]


# --- What the first run found, each on its own ---------------------------------------------
@pytest.fixture
def api():
    client = APIClient()
    tokens = factories.login(client, factories.make_user())
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access_token']}")
    return client


def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def test_the_schema_and_the_server_agree_on_the_paginated_list(api):
    schema = APIClient().get("/openapi.json").json()
    documented = _resolve(
        schema, schema["paths"]["/api/sessions"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    )
    body = api.get("/api/sessions?page_size=1").json()
    assert documented.get("type") == "object", documented
    assert set(documented["properties"]) == set(body) == set(documented["required"])
    item = _resolve(schema, documented["properties"]["results"]["items"])
    assert body["results"] and set(item["properties"]) == set(body["results"][0])


def test_the_schema_and_the_server_agree_on_the_conversations_page(api):
    schema = APIClient().get("/openapi.json").json()
    operation = schema["paths"]["/api/session/{session_id}/conversations"]["get"]
    documented = _resolve(schema, operation["responses"]["200"]["content"]["application/json"]["schema"])
    session_id = api.get("/api/auth/me").json()["session_id"]
    body = api.get(f"/api/session/{session_id}/conversations").json()
    assert documented.get("type") == "object", documented
    assert set(documented["properties"]) == set(body) == set(documented["required"])


@pytest.mark.parametrize(
    "query",
    ["page=", "page=0", "page=-1", "page=last", "page=x", "page_size=null", "page_size=", "page_size=0",
     "status=", "status=open", "scope=", "scope=all"],
)
def test_an_invalid_query_value_is_400_with_the_error_body(api, query):
    response = api.get(f"/api/sessions?{query}")
    assert response.status_code == 400, (query, response.status_code, response.content)
    assert response.json()["error"] == "invalid_request"


def test_page_size_over_the_maximum_is_read_as_the_maximum_and_a_page_past_the_last_is_404(api):
    assert api.get("/api/sessions?page_size=100000").status_code == 200
    assert api.get("/api/sessions?page=99999999999999999999").json()["error"] == "not_found"


def test_every_operation_documents_its_errors_with_the_error_body():
    schema = APIClient().get("/openapi.json").json()
    for path, item in schema["paths"].items():
        if not path.startswith("/api/"):
            continue
        for method, operation in item.items():
            errors = {status for status in operation["responses"] if status >= "400"}
            assert "503" in errors and errors - {"503"}, (method, path, sorted(operation["responses"]))
            for status in errors:
                ref = operation["responses"][status]["content"]["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/Error", (method, path, status)


def test_the_constraints_the_server_enforces_are_in_the_schema():
    schema = APIClient().get("/openapi.json").json()
    components = schema["components"]["schemas"]
    state = schema["paths"]["/api/session/{session_id}/state"]
    if_match = next(p for p in state["put"]["parameters"] if p["name"] == "If-Match")
    assert if_match["required"] and "pattern" in if_match["schema"]
    intent_type = _resolve(schema, components["IntentSubmitInputRequest"]["properties"]["intent_type"]["allOf"][0])
    assert intent_type["enum"] == ["batch", "echo"]
    assert components["RegisterInputRequest"]["properties"]["password"]["pattern"] == "^[^\\u0000]{8,}$"
    assert "\\u0000" in components["FileReferenceRequest"]["properties"]["name"]["pattern"]
    assert state["patch"]["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/SessionStateInputRequest"
    )


def test_a_number_where_the_schema_says_string_is_refused(api):
    session_id = api.get("/api/auth/me").json()["session_id"]
    file = {"name": "a.txt", "size": 1, "sha256": "0" * 64, "content_type": "text/plain", "location": 0}
    response = api.post(f"/api/session/{session_id}/files", file, format="json")
    assert response.status_code == 400 and "location" in response.json()["details"], response.content
    assert api.post(f"/api/session/{session_id}/files", {**file, "location": "s3://b/a"}, format="json").status_code == 201


@pytest.mark.parametrize(
    ("if_match", "status"),
    [("0", 200), ('"0"', 200), ('W/"0"', 200), ("W/0", 200), ('"0', 400), ('""0""', 400), ("*", 400), ("0,1", 400)],
)
def test_if_match_is_taken_exactly_as_its_pattern_says(api, if_match, status):
    session_id = api.get("/api/auth/me").json()["session_id"]
    response = api.put(f"/api/session/{session_id}/state", {"data": {}}, format="json", HTTP_IF_MATCH=if_match)
    assert response.status_code == status, response.content
    assert bool(re.fullmatch(IF_MATCH_PATTERN, if_match)) == (status == 200)
