"""The product's own settings, read through one lazy object.

`runtime_settings.SESSION_IDLE_TTL` reads `settings.SYMPHAINY["SESSION_IDLE_TTL"]`, falling
back to the default here. The object reloads in place when tests override settings, so
no module keeps a stale copy (the pattern of DRF's `api_settings`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

DEFAULTS: dict[str, Any] = {
    "SESSION_ABSOLUTE_TTL": timedelta(hours=24),
    "SESSION_IDLE_TTL": timedelta(hours=1),
    "SESSION_TOUCH_INTERVAL": timedelta(seconds=60),
    "SESSION_INTENT_TTL": timedelta(seconds=30),
    "MAX_ACTIVE_SESSIONS_PER_USER": 10,
    # A just-rotated refresh token presented again this soon, from the same client
    # address, gets the same successor instead of ending the session (0 turns it off).
    "REFRESH_REUSE_GRACE": timedelta(seconds=10),
    # Login lockout per (account, client address): after this many failures, wait
    # LOGIN_LOCKOUT, doubling per further failure up to LOGIN_LOCKOUT_MAX.
    "LOGIN_LOCKOUT_AFTER_FAILURES": 5,
    "LOGIN_LOCKOUT": timedelta(seconds=30),
    "LOGIN_LOCKOUT_MAX": timedelta(minutes=15),
    "MAX_REQUEST_BYTES": 1024 * 1024,
    # Deepest nesting accepted in a JSON body or socket frame.
    "JSON_MAX_DEPTH": 64,
    "SESSION_METADATA_MAX_BYTES": 16 * 1024,
    "WS_MAX_SOCKETS_PER_USER": 20,
    "WS_MAX_MESSAGE_BYTES": 64 * 1024,
    "WS_MAX_SEND_BUFFER_BYTES": 1024 * 1024,
    # Pending connections each daphne listener queues (gunicorn's and uvicorn's default).
    "SERVER_LISTEN_BACKLOG": 2048,
    "WS_MESSAGE_RATE": "60/10s",
    "WS_RECHECK_INTERVAL": timedelta(seconds=30),
    "WS_HEARTBEAT_INTERVAL": timedelta(seconds=25),
    "WS_CONNECTION_FLUSH_INTERVAL": timedelta(milliseconds=250),
    "ACCESS_CACHE_TTL": timedelta(seconds=5),
    # The session event log: kept for EVENT_RETENTION or the last EVENT_RETENTION_COUNT
    # events of a session, whichever keeps more; each process's tail polls it this often
    # (PostgreSQL's NOTIFY wakes it sooner) and waits this long for an id committed late.
    "EVENT_RETENTION": timedelta(minutes=10),
    "EVENT_RETENTION_COUNT": 1000,
    "EVENT_POLL_INTERVAL": timedelta(milliseconds=200),
    # On the embedded SQLite, how often each serving process looks for another process's
    # commit to the log (a cheap version read; zero turns the watcher off).
    "EVENT_WATCH_INTERVAL": timedelta(milliseconds=10),
    "EVENT_GAP_WAIT": timedelta(seconds=5),
    "SERVER_INSTANCE": None,
    "STATE_BACKEND": "database",
    "STATE_MAX_BYTES": 256 * 1024,
    "EXECUTION_RUNNER": "asyncio",
    # Per user: intent submissions and API-created sessions per window, and executions
    # created or running at once; over them, 429 with Retry-After.
    "INTENT_SUBMIT_RATE": "60/min",
    "SESSION_CREATE_RATE": "20/min",
    "MAX_RUNNING_EXECUTIONS_PER_USER": 10,
    "EXECUTION_STALE_AFTER": timedelta(seconds=60),
    "EXECUTION_MAX_ATTEMPTS": 3,
    "INTENT_HANDLERS": {
        "echo": "sessions_runtime.handlers.echo",
        "batch": "sessions_runtime.handlers.batch",
    },
    "BATCH_ITEM_DELAY": 0.05,
    "AGENT_HANDLER": "sessions_runtime.agents.echo_agent",
    "AGENT_TOKEN_DELAY": 0.02,
    "IDEMPOTENCY_TTL": timedelta(hours=24),
    "AUDIT_RETENTION": timedelta(days=90),
    "ADMIN_LOGIN_FAILURES_PER_MINUTE": 10,
    # Concurrent password hashes per process (0: one per core), logins waiting for one, and
    # how long each may wait (accounts.passwords).
    "LOGIN_HASH_CONCURRENCY": 0,
    "LOGIN_HASH_QUEUE": 100,
    "LOGIN_HASH_WAIT": timedelta(seconds=15),
    # Self-registration (POST /api/auth/register); production usually turns it off.
    "REGISTRATION_OPEN": True,
    # Who may read /metrics: client networks (CIDR), or the bearer token when set.
    "METRICS_ALLOWED_NETWORKS": ["127.0.0.0/8", "::1/128"],
    "METRICS_TOKEN": None,
    "DEMO_EMAIL": "demo@symphainy.local",
    "DEMO_PASSWORD": "symphainy-demo-pass",
    # Lets the public development SECRET_KEY through the start-up check with DEBUG off
    # (`make run`, the tests); never set it in production.
    "INSECURE_DEV_KEY": False,
}


class RuntimeSettings:
    """Attribute access to `settings.SYMPHAINY` with defaults, cached until settings change."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Unknown Symphainy setting: {name}")
        if name not in self._cache:
            user = getattr(settings, "SYMPHAINY", {})
            self._cache[name] = user.get(name, DEFAULTS[name])
        return self._cache[name]

    def reload(self) -> None:
        self._cache.clear()


runtime_settings = RuntimeSettings()


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == "SYMPHAINY":
        runtime_settings.reload()


setting_changed.connect(_reload)
