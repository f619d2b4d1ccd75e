"""Start-up checks that fail closed: the service refuses to run with a public signing key,
or with a product setting of `core.conf` that is malformed (a rate that does not parse, a
size, count, interval or TTL of zero or less, an unknown name).

Registered as Django system checks (`manage.py check`, `runserver`, `migrate` and every
command that runs checks), and run again by `startup_checks_enforce` when the ASGI or WSGI
application is imported, so `python -m symphainy.serve`, plain `daphne` and gunicorn refuse too.
Rules that belong to another app's code are checked there, with the same tag: handler
paths and backends in `sessions_runtime.checks`.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from core.conf import DEFAULTS, runtime_settings

# The key `symphainy/settings.py` falls back to when SECRET_KEY is unset: public, in the
# repository, so anything signed with it can be forged.
DEVELOPMENT_SECRET_KEY = "django-insecure-symphainy-local-development-key-change-me"
# HS256 keys shorter than the hash output weaken the MAC (RFC 7518 §3.2 requires ≥ 256 bits).
MIN_SIGNING_KEY_BYTES = 32
TAG = "symphainy_security"
# The product settings' checks: run by `check` and, like the security ones, at start-up.
SETTINGS_TAG = "symphainy_settings"


def _insecure_allowed() -> bool:
    return bool(settings.DEBUG or runtime_settings.INSECURE_DEV_KEY)


@checks.register(TAG)
def signing_keys_check(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """core.E001: the development SECRET_KEY outside DEBUG; core.E002: a short JWT key."""
    errors: list[checks.CheckMessage] = []
    if _insecure_allowed():
        return errors
    secret = settings.SECRET_KEY
    if not secret or secret == DEVELOPMENT_SECRET_KEY or secret.startswith("django-insecure"):
        errors.append(checks.Error(
            "SECRET_KEY is unset (or the public development key) and DEBUG is off: anyone could forge tokens.",
            hint="Set SECRET_KEY to a long random value; for a local run only, set DEBUG=1 or "
                 "SYMPHAINY_INSECURE_DEV_KEY=1.",
            id="core.E001",
        ))
    signing_key = settings.SIMPLE_JWT.get("SIGNING_KEY") or ""
    key_bytes = signing_key.encode() if isinstance(signing_key, str) else bytes(signing_key)
    if len(key_bytes) < MIN_SIGNING_KEY_BYTES:
        errors.append(checks.Error(
            f"JWT_SIGNING_KEY is {len(key_bytes)} bytes; HS256 needs at least {MIN_SIGNING_KEY_BYTES}.",
            hint="Set JWT_SIGNING_KEY (or SECRET_KEY, its default) to at least 32 random bytes.",
            id="core.E002",
        ))
    return errors


def startup_checks_enforce() -> None:
    """Raise ImproperlyConfigured with every security error; the servers call it at start."""
    errors = [e for e in checks.run_checks(tags=[TAG, SETTINGS_TAG]) if e.is_serious()]
    if errors:
        lines = "\n".join(f"{e.id}: {e.msg} HINT: {e.hint}" for e in errors)
        raise ImproperlyConfigured(f"Refusing to start:\n{lines}")


@checks.register(SETTINGS_TAG)
def rates_check(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """core.E003: a rate setting that does not parse (it would fail at the first request)."""
    from core.limits import parse_rate

    errors: list[checks.CheckMessage] = []
    for name in ("WS_MESSAGE_RATE", "INTENT_SUBMIT_RATE", "SESSION_CREATE_RATE"):
        rate = getattr(runtime_settings, name)
        try:
            parse_rate(rate if isinstance(rate, str) else "")
        except ValueError:
            errors.append(checks.Error(f"{name}: Invalid rate {rate!r}; expected like '60/10s' or '100/min'.",
                                       id="core.E003"))
    return errors


# --- Product settings (core.conf): types and ranges ------------------------------------
POSITIVE_DURATIONS = (
    "SESSION_ABSOLUTE_TTL", "SESSION_IDLE_TTL", "SESSION_INTENT_TTL", "WS_RECHECK_INTERVAL",
    "WS_HEARTBEAT_INTERVAL", "WS_CONNECTION_FLUSH_INTERVAL", "EXECUTION_STALE_AFTER", "IDEMPOTENCY_TTL",
    "AUDIT_RETENTION", "LOGIN_HASH_WAIT", "LOGIN_LOCKOUT", "LOGIN_LOCKOUT_MAX",
    "EVENT_RETENTION", "EVENT_POLL_INTERVAL", "EVENT_GAP_WAIT",
)
# Zero is meaningful here: touch on every request, no access cache, no refresh-reuse grace,
# no SQLite watcher.
NON_NEGATIVE_DURATIONS = ("SESSION_TOUCH_INTERVAL", "ACCESS_CACHE_TTL", "REFRESH_REUSE_GRACE", "EVENT_WATCH_INTERVAL")
POSITIVE_INTEGERS = (
    "MAX_ACTIVE_SESSIONS_PER_USER", "MAX_REQUEST_BYTES", "SESSION_METADATA_MAX_BYTES", "WS_MAX_SOCKETS_PER_USER",
    "WS_MAX_MESSAGE_BYTES", "WS_MAX_SEND_BUFFER_BYTES", "STATE_MAX_BYTES", "EXECUTION_MAX_ATTEMPTS",
    "ADMIN_LOGIN_FAILURES_PER_MINUTE", "LOGIN_LOCKOUT_AFTER_FAILURES", "JSON_MAX_DEPTH",
    "MAX_RUNNING_EXECUTIONS_PER_USER", "EVENT_RETENTION_COUNT", "SERVER_LISTEN_BACKLOG",
)
# Zero is meaningful here: one hash per core, or no login waits for a hash.
NON_NEGATIVE_INTEGERS = ("LOGIN_HASH_CONCURRENCY", "LOGIN_HASH_QUEUE")
NON_NEGATIVE_SECONDS = ("BATCH_ITEM_DELAY", "AGENT_TOKEN_DELAY")
NON_EMPTY_STRINGS = ("DEMO_EMAIL", "DEMO_PASSWORD")

HINT = "Set it in the environment (see the README's configuration table) or in settings.SYMPHAINY."


def _error(name: str, problem: str, id: str, hint: str = HINT) -> checks.CheckMessage:
    return checks.Error(f"SYMPHAINY[{name!r}] {problem}", hint=hint, id=id)


@checks.register(SETTINGS_TAG)
def check_product_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """core.E004 unknown name; E005 a duration that is not positive (or negative, where zero is
    allowed); E006 a count or size below 1 (or below 0, where zero is allowed); E007 a delay
    that is negative; E008 a flag, string or list of the wrong shape."""
    errors: list[checks.CheckMessage] = []
    configured = getattr(settings, "SYMPHAINY", {})
    if not isinstance(configured, dict):
        return [checks.Error("settings.SYMPHAINY must be a dict.", id="core.E008")]
    for name in sorted(set(configured) - set(DEFAULTS)):
        errors.append(_error(name, "is not a Symphainy setting.", "core.E004", hint="Check its spelling."))
    for name in POSITIVE_DURATIONS + NON_NEGATIVE_DURATIONS:
        value = getattr(runtime_settings, name)
        if not isinstance(value, timedelta):
            errors.append(_error(name, f"must be a timedelta, not {value!r}.", "core.E005"))
        elif name in POSITIVE_DURATIONS and value <= timedelta(0):
            errors.append(_error(name, f"must be longer than zero, not {value.total_seconds():g} s.", "core.E005"))
        elif value < timedelta(0):
            errors.append(_error(name, f"must be zero or more, not {value.total_seconds():g} s.", "core.E005"))
    for name in POSITIVE_INTEGERS:
        value = getattr(runtime_settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            errors.append(_error(name, f"must be a whole number of at least 1, not {value!r}.", "core.E006"))
    for name in NON_NEGATIVE_INTEGERS:
        value = getattr(runtime_settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            errors.append(_error(name, f"must be a whole number of at least 0, not {value!r}.", "core.E006"))
    for name in NON_NEGATIVE_SECONDS:
        value = getattr(runtime_settings, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            errors.append(_error(name, f"must be zero or more seconds, not {value!r}.", "core.E007"))
    for name in NON_EMPTY_STRINGS:
        value = getattr(runtime_settings, name)
        if not isinstance(value, str) or not value.strip():
            errors.append(_error(name, f"must be a non-empty string, not {value!r}.", "core.E008"))
    for name in ("SERVER_INSTANCE", "METRICS_TOKEN"):
        value = getattr(runtime_settings, name)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            errors.append(_error(name, f"must be a non-empty string or unset, not {value!r}.", "core.E008"))
    for name in ("REGISTRATION_OPEN", "INSECURE_DEV_KEY"):
        if not isinstance(getattr(runtime_settings, name), bool):
            errors.append(_error(name, f"must be True or False, not {getattr(runtime_settings, name)!r}.", "core.E008"))
    networks = runtime_settings.METRICS_ALLOWED_NETWORKS
    if not isinstance(networks, (list, tuple)):
        errors.append(_error("METRICS_ALLOWED_NETWORKS", f"must be a list of networks, not {networks!r}.", "core.E008"))
    else:
        for network in networks:
            try:  # parsed as core.metrics parses it
                ipaddress.ip_network(network, strict=False)
            except (TypeError, ValueError):
                errors.append(_error("METRICS_ALLOWED_NETWORKS", f"holds {network!r}, which is not a network "
                                     "like '10.0.0.0/8' or '::1/128'.", "core.E008"))
    return errors


# --- Redis: Sentinel and TLS (core.redis_options) ---------------------------------------
REDIS_HINT = "See the README's configuration table (REDIS_URL, REDIS_SENTINELS, REDIS_SENTINEL_MASTER, REDIS_TLS_CA_FILE)."


@checks.register(SETTINGS_TAG)
def redis_check(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """core.E009 half a Sentinel configuration (sentinels without a master name, or the
    reverse, or either without REDIS_URL); E010 a sentinel address that is not host:port;
    E011 a TLS CA file that is missing, or set while REDIS_URL does not ask for TLS."""
    import os

    from core.redis_options import is_tls_url, parse_sentinels

    errors: list[checks.CheckMessage] = []
    url = getattr(settings, "REDIS_URL", None)
    sentinels = getattr(settings, "REDIS_SENTINELS", None) or []
    master = getattr(settings, "REDIS_SENTINEL_MASTER", None)
    ca_file = getattr(settings, "REDIS_TLS_CA_FILE", None)
    if isinstance(sentinels, str):
        sentinels = [sentinels]
    if sentinels and not master:
        errors.append(checks.Error("REDIS_SENTINELS is set but REDIS_SENTINEL_MASTER is not: "
                                   "the sentinels would not know which master to name.", hint=REDIS_HINT, id="core.E009"))
    if master and not sentinels:
        errors.append(checks.Error("REDIS_SENTINEL_MASTER is set but REDIS_SENTINELS is not: "
                                   "there is no sentinel to ask for the master.", hint=REDIS_HINT, id="core.E009"))
    if getattr(settings, "REDIS_SENTINEL_PASSWORD", None) and not sentinels:
        errors.append(checks.Error("REDIS_SENTINEL_PASSWORD is set but REDIS_SENTINELS is not.",
                                   hint=REDIS_HINT, id="core.E009"))
    if (sentinels or master) and not url:
        errors.append(checks.Error("Sentinel is configured but REDIS_URL is not: Redis would not be used at all.",
                                   hint="Set REDIS_URL too (e.g. redis://:password@sentinel/0): it gives the db, "
                                        "the password and TLS; its host is not used.", id="core.E009"))
    _, bad = parse_sentinels(sentinels)
    for entry in bad:
        errors.append(checks.Error(f"REDIS_SENTINELS holds {entry!r}, which is not host:port (or [ipv6]:port).",
                                   hint=REDIS_HINT, id="core.E010"))
    if ca_file:
        if not os.path.isfile(ca_file) or not os.access(ca_file, os.R_OK):
            errors.append(checks.Error(f"REDIS_TLS_CA_FILE {ca_file!r} is not a readable file.",
                                       hint=REDIS_HINT, id="core.E011"))
        if url and not is_tls_url(url):
            errors.append(checks.Error("REDIS_TLS_CA_FILE is set but REDIS_URL is not rediss://: "
                                       "Redis would be reached without TLS.",
                                       hint="Use a rediss:// REDIS_URL, or unset REDIS_TLS_CA_FILE.", id="core.E011"))
    return errors
