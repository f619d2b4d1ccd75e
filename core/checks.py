"""Start-up checks that fail closed: the service refuses to run with a public signing key.

Registered as Django system checks (`manage.py check`, `runserver`, `migrate` and every
command that runs checks), and run again by `startup_checks_enforce` when the ASGI
application is imported, so `python -m symphainy.serve` and plain `daphne` refuse too.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from core.conf import runtime_settings

# The key `symphainy/settings.py` falls back to when SECRET_KEY is unset: public, in the
# repository, so anything signed with it can be forged.
DEVELOPMENT_SECRET_KEY = "django-insecure-symphainy-local-development-key-change-me"
# HS256 keys shorter than the hash output weaken the MAC (RFC 7518 §3.2 requires ≥ 256 bits).
MIN_SIGNING_KEY_BYTES = 32
TAG = "symphainy_security"


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
    errors = [e for e in checks.run_checks(tags=[TAG]) if e.is_serious()]
    if errors:
        lines = "\n".join(f"{e.id}: {e.msg} HINT: {e.hint}" for e in errors)
        raise ImproperlyConfigured(f"Refusing to start:\n{lines}")


@checks.register()
def rates_check(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """core.E003: a rate setting that does not parse (it would fail at the first request)."""
    from core.limits import parse_rate

    errors: list[checks.CheckMessage] = []
    for name in ("WS_MESSAGE_RATE", "INTENT_SUBMIT_RATE", "SESSION_CREATE_RATE"):
        try:
            parse_rate(getattr(runtime_settings, name))
        except ValueError as exc:
            errors.append(checks.Error(f"{name}: {exc}", id="core.E003"))
    return errors
