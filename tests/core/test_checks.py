"""The system checks of every product setting (core, realtime, sessions_runtime): a bad
value is an error with its id, naming the setting; the defaults pass; and a bad value
stops `manage.py check` and a server's start-up."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.core import checks

BASE_DIR = Path(__file__).resolve().parents[2]


def errors_for(settings, **product) -> list[checks.CheckMessage]:
    settings.SYMPHAINY = {**settings.SYMPHAINY, **product}  # keeps what the test environment set
    return [m for m in checks.run_checks() if m.is_serious()]


def ids(messages) -> list[str]:
    return sorted(m.id for m in messages)


def test_the_defaults_pass(settings):
    assert errors_for(settings) == []


@pytest.mark.parametrize(
    "name, value, error_id, says",
    [
        ("SESSION_TYPO_TTL", 5, "core.E004", "is not a Symphainy setting"),
        ("SESSION_IDLE_TTL", timedelta(0), "core.E005", "longer than zero"),
        ("SESSION_ABSOLUTE_TTL", timedelta(seconds=-5), "core.E005", "longer than zero"),
        ("WS_HEARTBEAT_INTERVAL", 25, "core.E005", "must be a timedelta"),
        ("ACCESS_CACHE_TTL", timedelta(seconds=-1), "core.E005", "zero or more"),
        ("WS_MAX_MESSAGE_BYTES", 0, "core.E006", "at least 1"),
        ("STATE_MAX_BYTES", -1, "core.E006", "at least 1"),
        ("EXECUTION_MAX_ATTEMPTS", "3", "core.E006", "at least 1"),
        ("MAX_ACTIVE_SESSIONS_PER_USER", True, "core.E006", "at least 1"),
        ("BATCH_ITEM_DELAY", -0.5, "core.E007", "zero or more seconds"),
        ("DEMO_EMAIL", "  ", "core.E008", "non-empty string"),
        ("SERVER_INSTANCE", "", "core.E008", "non-empty string or unset"),
        ("LOGIN_HASH_WAIT", timedelta(0), "core.E005", "longer than zero"),
        ("LOGIN_HASH_QUEUE", -1, "core.E006", "at least 0"),
        ("LOGIN_HASH_CONCURRENCY", 1.5, "core.E006", "at least 0"),
        ("METRICS_TOKEN", "", "core.E008", "non-empty string or unset"),
        ("REGISTRATION_OPEN", "no", "core.E008", "True or False"),
        ("METRICS_ALLOWED_NETWORKS", "10.0.0.0/8", "core.E008", "list of networks"),
        ("METRICS_ALLOWED_NETWORKS", ["10.0.0.0/8", "intranet"], "core.E008", "'intranet'"),
        ("WS_MESSAGE_RATE", "lots", "core.E003", "'lots'"),
        ("WS_MESSAGE_RATE", "0/10s", "core.E003", "'0/10s'"),
        ("WS_MESSAGE_RATE", 60, "core.E003", "60"),
        ("INTENT_SUBMIT_RATE", "often", "core.E003", "'often'"),
        ("REFRESH_REUSE_GRACE", timedelta(seconds=-1), "core.E005", "zero or more"),
        ("LOGIN_LOCKOUT", timedelta(0), "core.E005", "longer than zero"),
        ("JSON_MAX_DEPTH", 0, "core.E006", "at least 1"),
        ("MAX_RUNNING_EXECUTIONS_PER_USER", -3, "core.E006", "at least 1"),
        ("INSECURE_DEV_KEY", "yes", "core.E008", "True or False"),
        ("SERVER_STALE_AFTER", timedelta(seconds=2), "core.E012", "longer than SERVER_HEARTBEAT_INTERVAL (2 s)"),
        ("SHUTDOWN_TIMEOUT", timedelta(seconds=5), "core.E012", "longer than SHUTDOWN_DRAIN_WINDOW (5 s)"),
        ("SERVER_STALE_AFTER", timedelta(0), "core.E005", "longer than zero"),
        ("SERVER_HEARTBEAT_INTERVAL", timedelta(seconds=120), "core.E012", "SERVER_HEARTBEAT_INTERVAL (120 s)"),
        ("STATE_BACKEND", "sqlite", "sessions_runtime.E001", "database, memory, redis"),
        ("STATE_BACKEND", "no_such_module.Backend", "sessions_runtime.E001", "does not import"),
        ("EXECUTION_RUNNER", "celery", "sessions_runtime.E002", "asyncio, worker"),
        ("INTENT_HANDLERS", {"echo": "sessions_runtime.handlers.nope"}, "sessions_runtime.E003", "['echo']"),
        ("INTENT_HANDLERS", {"echo": "nodots"}, "sessions_runtime.E003", "not a dotted path"),
        ("INTENT_HANDLERS", {"": "sessions_runtime.handlers.echo"}, "sessions_runtime.E003", "intent type is empty"),
        ("INTENT_HANDLERS", ["echo"], "sessions_runtime.E003", "must be a dict"),
        ("INTENT_HANDLERS", {"x": "sessions_runtime.runner.WORKER_CHANNEL"}, "sessions_runtime.E003", "not callable"),
        ("AGENT_HANDLER", "myplatform.agents.smart", "sessions_runtime.E004", "does not import"),
    ],
)
def test_a_bad_value_is_an_error_naming_the_setting(settings, name, value, error_id, says):
    found = errors_for(settings, **{name: value})
    assert ids(found) == [error_id]
    assert name in found[0].msg and says in found[0].msg


def test_good_values_other_than_the_defaults_pass(settings):
    assert errors_for(
        settings,
        WS_MESSAGE_RATE="100/min",
        ACCESS_CACHE_TTL=timedelta(0),
        SESSION_TOUCH_INTERVAL=timedelta(0),
        STATE_BACKEND="redis",
        EXECUTION_RUNNER="worker",
        LOGIN_HASH_QUEUE=0,
        REGISTRATION_OPEN=False,
        METRICS_ALLOWED_NETWORKS=["10.0.0.0/8", "fd00::/8", "192.0.2.1"],
    ) == []
    assert ids(errors_for(settings, WS_MESSAGE_RATE="5/s", STATE_BACKEND="sessions_runtime.state.MemoryStateBackend",
                          AGENT_TOKEN_DELAY=0)) == []


def test_every_problem_is_reported_at_once(settings):
    found = errors_for(settings, WS_MESSAGE_RATE="lots", EXECUTION_RUNNER="celery", STATE_MAX_BYTES=0)
    assert ids(found) == ["core.E003", "core.E006", "sessions_runtime.E002"]


def _run(args: list[str], tmp_path, **env_extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(SQLITE_PATH=str(tmp_path / "checks.sqlite3"), **env_extra)
    return subprocess.run([sys.executable, *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120)


def test_a_bad_environment_value_stops_manage_py_check(tmp_path):
    result = _run(["manage.py", "check"], tmp_path, WS_MESSAGE_RATE="lots")
    assert result.returncode == 1
    assert "(core.E003) WS_MESSAGE_RATE: Invalid rate 'lots'" in result.stderr


@pytest.mark.parametrize("module", ["symphainy.asgi", "symphainy.wsgi"])
def test_a_bad_environment_value_stops_a_server_at_start_up(tmp_path, module):
    # Importing the application is what daphne and gunicorn do first; it must refuse.
    result = _run(["-c", f"import {module}"], tmp_path, EXECUTION_RUNNER="celery")
    assert result.returncode != 0
    assert "Refusing to start" in result.stderr and "sessions_runtime.E002: SYMPHAINY['EXECUTION_RUNNER']" in result.stderr
    assert _run(["-c", f"import {module}"], tmp_path).returncode == 0
