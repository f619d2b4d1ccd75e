"""Login, registration and refresh throttles (DRF's, on the shared cache), and the login
lockout: failures counted per account *and* client address, with exponential backoff."""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

from django.core.cache import cache
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from accounts.models import normalize_email
from core.conf import runtime_settings
from core.exceptions import DEPENDENCY_ERRORS, RateLimited

logger = logging.getLogger(__name__)


class _ScopedThrottle(SimpleRateThrottle):
    """Reads its rate when used, not at import, so settings overrides take effect; lets
    requests through (with a warning) while the shared cache is unreachable, so that a
    Redis outage does not take logins down with it."""

    def get_rate(self) -> str | None:
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def allow_request(self, request: Request, view: Any) -> bool:
        try:
            return super().allow_request(request, view)
        except DEPENDENCY_ERRORS:
            logger.warning("throttle cache unavailable; %s not enforced", self.scope, exc_info=True)
            return True


class _AddressThrottle(_ScopedThrottle):
    def get_cache_key(self, request: Request, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class LoginAddressThrottle(_AddressThrottle):
    scope = "login_address"


class RegisterAddressThrottle(_AddressThrottle):
    scope = "register_address"


class RefreshAddressThrottle(_AddressThrottle):
    scope = "refresh_address"


# --- Login lockout --------------------------------------------------------------------
# A per-account throttle counted from every address lets anyone lock the owner out by
# guessing from anywhere. Failures are counted per (account, address) pair instead: after
# LOGIN_LOCKOUT_AFTER_FAILURES the pair waits LOGIN_LOCKOUT_SECONDS, doubling with each
# further failure up to LOGIN_LOCKOUT_MAX_SECONDS, while the owner's address is untouched.
# One address guessing at many accounts is bounded by the per-address throttle.
def _pair(email: str, client_address: str | None) -> str:
    # Hashed: an email can be long or hold characters a cache key must not.
    raw = f"{normalize_email(email)}|{client_address or '-'}"
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def login_lockout_check(*, email: str, client_address: str | None) -> None:
    """Raise RateLimited (with Retry-After) while this account is locked for this address."""
    try:
        until = cache.get(f"login-lock:{_pair(email, client_address)}")
    except DEPENDENCY_ERRORS:
        logger.warning("throttle cache unavailable; login lockout not enforced", exc_info=True)
        return
    remaining = (until or 0) - time.time()
    if remaining > 0:
        raise RateLimited("Too many failed logins. Retry later.", retry_after=remaining)


def login_failure_record(*, email: str, client_address: str | None) -> None:
    """Count a failed login of this account from this address; lock the pair past the limit."""
    pair = _pair(email, client_address)
    limit, longest = runtime_settings.LOGIN_LOCKOUT_AFTER_FAILURES, runtime_settings.LOGIN_LOCKOUT_MAX
    try:
        counter = f"login-failures:{pair}"
        cache.add(counter, 0, timeout=longest.total_seconds())
        failures = cache.incr(counter)
        if failures >= limit:
            wait = min(runtime_settings.LOGIN_LOCKOUT.total_seconds() * 2 ** (failures - limit), longest.total_seconds())
            cache.set(f"login-lock:{pair}", time.time() + wait, timeout=wait)
    except (ValueError, *DEPENDENCY_ERRORS):  # ValueError: the counter expired in between
        logger.warning("throttle cache unavailable; login failure not counted", exc_info=True)


def login_failures_clear(*, email: str, client_address: str | None) -> None:
    """A successful login forgets the pair's failures."""
    pair = _pair(email, client_address)
    try:
        cache.delete_many([f"login-failures:{pair}", f"login-lock:{pair}"])
    except DEPENDENCY_ERRORS:
        logger.warning("throttle cache unavailable", exc_info=True)
