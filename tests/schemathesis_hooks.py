"""Schemathesis hooks for tests/test_schema_conformance.py (loaded by the `st` command
through SCHEMATHESIS_HOOKS, never by pytest): a fresh login whenever the token stops
working. The run itself logs out, ends sessions and opens more than the per-user cap, each
of which rightly ends the session of the token it holds."""

from __future__ import annotations

import os

import requests
import schemathesis


@schemathesis.auth()  # kept, and fetched again after a 401
class FreshLogin:
    def get(self, case, context):  # type: ignore[no-untyped-def]
        response = requests.post(
            os.environ["SCHEMA_TEST_BASE_URL"] + "/api/auth/login",
            json={"email": os.environ["SCHEMA_TEST_EMAIL"], "password": os.environ["SCHEMA_TEST_PASSWORD"]},
            timeout=15,
        )
        response.raise_for_status()
        return response.json()["access_token"]

    def set(self, case, data, context):  # type: ignore[no-untyped-def]
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}
