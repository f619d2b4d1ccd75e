"""The declared errors: each name says what its code means, and the codes, statuses and
close codes a client sees are the contract's."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from core import exceptions
from core.exceptions import CloseCode, PermissionDenied, SessionEnded, SessionNotWritable


@pytest.mark.parametrize(
    ("error", "status", "code", "close_code"),
    [
        (SessionEnded, 401, "session_ended", CloseCode.SESSION_ENDED),
        (SessionNotWritable, 409, "session_not_active", CloseCode.SERVER_ERROR),
        (PermissionDenied, 403, "permission_denied", CloseCode.UNAUTHENTICATED),
    ],
)
def test_names_match_their_codes(error, status, code, close_code):
    assert (error.status_code, error.code, error.close_code) == (status, code, close_code)


def test_the_old_misleading_name_is_gone():
    # `SessionNotActive` carried `session_ended`, beside a `session_not_active` of another class.
    assert not hasattr(exceptions, "SessionNotActive")


def _error_dicts_built_outside_error_body() -> list[str]:
    """Dict literals with both an "error" and a "message" key: an error body built by hand."""
    root = Path(__file__).resolve().parents[2]
    found = []
    for path in sorted(root.glob("*/**/*.py")):
        relative = path.relative_to(root)
        if relative.parts[0] in {".venv", "tests", "bench", "examples"} or "migrations" in relative.parts:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        builder = next(
            (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "error_body"), None
        )
        inside = set(map(id, ast.walk(builder))) if builder and str(relative) == "core/exceptions.py" else set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict) and id(node) not in inside:
                values = {k.value: v for k, v in zip(node.keys, node.values) if isinstance(k, ast.Constant)}
                # A JSON Schema describing the body (realtime/schema.py) maps "error" to a schema.
                if {"error", "message"} <= values.keys() and not isinstance(values["error"], ast.Dict):
                    found.append(f"{relative}:{node.lineno}")
    return found


def test_every_error_body_is_built_by_error_body():
    assert _error_dicts_built_outside_error_body() == []
