"""System checks for the product settings declared in `core.conf`: types and ranges.

A bad value stops `manage.py check` and every server's start-up (`checks_enforce`, called by
`symphainy/asgi.py` and `symphainy/wsgi.py`)
with a message naming the setting, instead of failing on the first request or socket.
Rules that belong to another app's code are checked there: the message rate in
`realtime.checks`, handler paths and backends in `sessions_runtime.checks`.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.checks import Error, register
from django.core.exceptions import ImproperlyConfigured

from core.conf import DEFAULTS, runtime_settings

POSITIVE_DURATIONS = (
    "SESSION_ABSOLUTE_TTL", "SESSION_IDLE_TTL", "SESSION_INTENT_TTL", "WS_RECHECK_INTERVAL",
    "WS_HEARTBEAT_INTERVAL", "WS_CONNECTION_FLUSH_INTERVAL", "EXECUTION_STALE_AFTER", "IDEMPOTENCY_TTL",
    "AUDIT_RETENTION", "LOGIN_HASH_WAIT",
)
# Zero is meaningful here: touch on every request, or no access cache at all.
NON_NEGATIVE_DURATIONS = ("SESSION_TOUCH_INTERVAL", "ACCESS_CACHE_TTL")
POSITIVE_INTEGERS = (
    "MAX_ACTIVE_SESSIONS_PER_USER", "MAX_REQUEST_BYTES", "SESSION_METADATA_MAX_BYTES", "WS_MAX_SOCKETS_PER_USER",
    "WS_MAX_MESSAGE_BYTES", "WS_MAX_SEND_BUFFER_BYTES", "STATE_MAX_BYTES", "EXECUTION_MAX_ATTEMPTS",
    "ADMIN_LOGIN_FAILURES_PER_MINUTE",
)
# Zero is meaningful here: one hash per core, or no login waits for a hash.
NON_NEGATIVE_INTEGERS = ("LOGIN_HASH_CONCURRENCY", "LOGIN_HASH_QUEUE")
NON_NEGATIVE_SECONDS = ("BATCH_ITEM_DELAY", "AGENT_TOKEN_DELAY")
NON_EMPTY_STRINGS = ("DEMO_EMAIL", "DEMO_PASSWORD")

HINT = "Set it in the environment (see the README's configuration table) or in settings.SYMPHAINY."


def checks_enforce() -> None:
    """Run every system check and refuse to start on an error: WSGI and ASGI servers run
    none themselves, so a bad setting would otherwise surface at the first request or socket."""
    errors = [message for message in checks.run_checks() if message.is_serious()]
    if errors:
        raise ImproperlyConfigured("\n".join(["System checks failed:", *map(str, errors)]))


def _error(name: str, problem: str, id: str, hint: str = HINT) -> Error:
    return Error(f"SYMPHAINY[{name!r}] {problem}", hint=hint, id=id)


@register()
def check_product_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """core.E001 unknown name; E002 a duration that is not positive (or negative, where zero is
    allowed); E003 a count or size below 1 (or below 0, where zero is allowed); E004 a delay
    that is negative; E005 a flag, string or list of the wrong shape."""
    errors: list[Error] = []
    configured = getattr(settings, "SYMPHAINY", {})
    if not isinstance(configured, dict):
        return [Error("settings.SYMPHAINY must be a dict.", id="core.E005")]
    for name in sorted(set(configured) - set(DEFAULTS)):
        errors.append(_error(name, "is not a Symphainy setting.", "core.E001", hint="Check its spelling."))
    for name in POSITIVE_DURATIONS + NON_NEGATIVE_DURATIONS:
        value = getattr(runtime_settings, name)
        if not isinstance(value, timedelta):
            errors.append(_error(name, f"must be a timedelta, not {value!r}.", "core.E002"))
        elif name in POSITIVE_DURATIONS and value <= timedelta(0):
            errors.append(_error(name, f"must be longer than zero, not {value.total_seconds():g} s.", "core.E002"))
        elif value < timedelta(0):
            errors.append(_error(name, f"must be zero or more, not {value.total_seconds():g} s.", "core.E002"))
    for name in POSITIVE_INTEGERS:
        value = getattr(runtime_settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            errors.append(_error(name, f"must be a whole number of at least 1, not {value!r}.", "core.E003"))
    for name in NON_NEGATIVE_INTEGERS:
        value = getattr(runtime_settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            errors.append(_error(name, f"must be a whole number of at least 0, not {value!r}.", "core.E003"))
    for name in NON_NEGATIVE_SECONDS:
        value = getattr(runtime_settings, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            errors.append(_error(name, f"must be zero or more seconds, not {value!r}.", "core.E004"))
    for name in NON_EMPTY_STRINGS:
        value = getattr(runtime_settings, name)
        if not isinstance(value, str) or not value.strip():
            errors.append(_error(name, f"must be a non-empty string, not {value!r}.", "core.E005"))
    for name in ("SERVER_INSTANCE", "METRICS_TOKEN"):
        value = getattr(runtime_settings, name)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            errors.append(_error(name, f"must be a non-empty string or unset, not {value!r}.", "core.E005"))
    if not isinstance(runtime_settings.REGISTRATION_OPEN, bool):
        errors.append(_error("REGISTRATION_OPEN", f"must be True or False, not {runtime_settings.REGISTRATION_OPEN!r}.",
                             "core.E005"))
    networks = runtime_settings.METRICS_ALLOWED_NETWORKS
    if not isinstance(networks, (list, tuple)):
        errors.append(_error("METRICS_ALLOWED_NETWORKS", f"must be a list of networks, not {networks!r}.", "core.E005"))
    else:
        for network in networks:
            try:  # parsed as core.metrics parses it
                ipaddress.ip_network(network, strict=False)
            except (TypeError, ValueError):
                errors.append(_error("METRICS_ALLOWED_NETWORKS", f"holds {network!r}, which is not a network "
                                     "like '10.0.0.0/8' or '::1/128'.", "core.E005"))
    return errors
