"""Login, registration and refresh throttles (DRF's, on the shared cache)."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from accounts.models import normalize_email
from core.exceptions import DEPENDENCY_ERRORS

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


class LoginAccountThrottle(_ScopedThrottle):
    """Per account, whatever address the attempts come from."""

    scope = "login_account"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        data = request.data
        email = data.get("email") if isinstance(data, dict) else None
        if not isinstance(email, str) or not email.strip():
            return None
        # Hashed: an email can be long or hold characters a cache key must not.
        digest = hashlib.sha256(normalize_email(email).encode("utf-8", "surrogatepass")).hexdigest()
        return self.cache_format % {"scope": self.scope, "ident": digest}
