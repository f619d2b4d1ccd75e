"""Start-up checks that fail closed: the service refuses to run with a public signing key,
with a placeholder of the example env file left in (core.E013), or with a product setting that breaks the check its row in `core.conf`'s table declares (a
rate that does not parse, a size, count, interval or TTL of zero or less), or an unknown name.

Registered as Django system checks (`manage.py check`, `runserver`, `migrate` and every
command that runs checks), and run again by `startup_checks_enforce` when the ASGI or WSGI
application is imported, so `python -m symphainy.serve`, plain `daphne` and gunicorn refuse too.
Rules that belong to another app's code are checked there, with the same tag: handler
paths and backends in `sessions_runtime.checks`.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from core.conf import DEFAULTS, LONGER_THAN_ERROR, SETTINGS, runtime_settings

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


# deploy/symphainy.env.example marks each value an operator must choose with this word.
PLACEHOLDER = "change-me"


@checks.register(TAG)
def placeholder_values_check(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """core.E013: a value still the example env file's placeholder (a key, a password, a host),
    whatever DEBUG says; the public development key is E001's."""
    database = settings.DATABASES.get("default", {})
    signing_key = settings.SIMPLE_JWT.get("SIGNING_KEY") or ""
    values = {
        "SECRET_KEY": settings.SECRET_KEY,
        "JWT_SIGNING_KEY": signing_key if isinstance(signing_key, str) and signing_key != settings.SECRET_KEY else "",
        "DATABASE_URL": " ".join(str(database.get(part) or "") for part in ("USER", "PASSWORD", "HOST", "NAME")),
        "REDIS_URL": getattr(settings, "REDIS_URL", None) or "",
        "ALLOWED_HOSTS": " ".join(settings.ALLOWED_HOSTS),
        "CSRF_TRUSTED_ORIGINS": " ".join(getattr(settings, "CSRF_TRUSTED_ORIGINS", [])),
    }
    return [
        checks.Error(
            f"{name} still holds a placeholder of deploy/symphainy.env.example ({PLACEHOLDER!r}).",
            hint=f"Replace every {PLACEHOLDER!r} value of the environment file (docs/deployment.md).",
            id="core.E013",
        )
        for name, value in values.items()
        if value != DEVELOPMENT_SECRET_KEY and PLACEHOLDER in str(value).lower()
    ]


def startup_checks_enforce() -> None:
    """Raise ImproperlyConfigured with every security error; the servers call it at start."""
    errors = [e for e in checks.run_checks(tags=[TAG, SETTINGS_TAG]) if e.is_serious()]
    if errors:
        lines = "\n".join(f"{e.id}: {e.msg} HINT: {e.hint}" for e in errors)
        raise ImproperlyConfigured(f"Refusing to start:\n{lines}")


# --- Product settings (core.conf): each checked as its row in the table says -------------
HINT = "Set it in the environment (see docs/configuration.md) or in settings.SYMPHAINY."


@checks.register(SETTINGS_TAG)
def product_settings_check(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """core.E004 an unknown name; then each setting by its check in core.conf's table:
    E003 a rate that does not parse, E005 a duration, E006 a count or size, E007 a delay,
    E008 a flag, string or list of the wrong shape; E012 a duration not longer than the one
    it must outlast. Settings whose check names another app's id are checked there."""
    configured = getattr(settings, "SYMPHAINY", {})
    if not isinstance(configured, dict):
        return [checks.Error("settings.SYMPHAINY must be a dict.", id="core.E008")]
    errors = [
        checks.Error(f"SYMPHAINY[{name!r}] is not a Symphainy setting.", hint="Check its spelling.", id="core.E004")
        for name in sorted(set(configured) - set(DEFAULTS))
    ]
    valid: set[str] = set()
    for setting in SETTINGS:
        if setting.check.problems is None:
            continue
        problems = setting.check.problems(setting.key, getattr(runtime_settings, setting.key))
        errors += [checks.Error(problem, hint=HINT, id=setting.check.error_id) for problem in problems]
        if not problems:
            valid.add(setting.key)
    for setting in SETTINGS:
        floor = setting.longer_than
        if floor and {setting.key, floor} <= valid:
            value, least = getattr(runtime_settings, setting.key), getattr(runtime_settings, floor)
            if value <= least:
                errors.append(checks.Error(
                    f"SYMPHAINY[{setting.key!r}] must be longer than {floor} ({least.total_seconds():g} s), "
                    f"not {value.total_seconds():g} s.", hint=HINT, id=LONGER_THAN_ERROR,
                ))
    return errors


# --- Redis: Sentinel and TLS (core.redis_options) ---------------------------------------
REDIS_HINT = "See docs/configuration.md (REDIS_URL, REDIS_SENTINELS, REDIS_SENTINEL_MASTER, REDIS_TLS_CA_FILE)."


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
