"""The refresh cookie (AUTH_REFRESH_COOKIE): a browser's refresh token kept where its
scripts cannot read it, so that a reload keeps the session. Why each attribute, and what
it leaves open: docs/security.md#the-refresh-cookie.

The attributes are written by `core.refresh_cookie` (shared with the views that clear the
cookie); this module puts a token in it, and guards the one request that reads it
(`POST /api/auth/refresh` with `X-Symphainy-Refresh: cookie`) against cross-site use. The
tokens themselves are the refresh service's (`token_refresh`).
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponseBase
from django.utils import timezone

from accounts.tokens import TokenPair
from core.conf import runtime_settings
from core.exceptions import CsrfFailed, NotAuthenticated
from core.refresh_cookie import refresh_cookie_enabled, refresh_cookie_write

# A header no cross-site form can send, and no cross-origin script either without a CORS
# preflight, which refuses it: it is not in CORS_ALLOW_HEADERS (symphainy/settings.py).
REFRESH_HEADER = "X-Symphainy-Refresh"
REFRESH_HEADER_VALUE = "cookie"


def refresh_cookie_set(response: HttpResponseBase, tokens: TokenPair) -> None:
    """The refresh token as the cookie, living exactly as long as the token."""
    refresh_cookie_write(
        response, tokens.refresh_token, max_age=max(0, int((tokens.refresh_expires_at - timezone.now()).total_seconds()))
    )


def refresh_cookie_requested(request: HttpRequest) -> bool:
    """Whether the request asks to refresh from the cookie (the feature being on)."""
    return refresh_cookie_enabled() and REFRESH_HEADER in request.headers


def refresh_cookie_has(request: HttpRequest) -> bool:
    return bool(request.COOKIES.get(runtime_settings.AUTH_REFRESH_COOKIE_NAME))


def refresh_cookie_read(request: HttpRequest) -> str:
    """The cookie's token, for a request the page's own script made: the custom header,
    and an `Origin` (and `Sec-Fetch-Site`), when the browser sends them, of this service's
    own origin, compared as Django's CsrfViewMiddleware compares it (the scheme it sees,
    so behind a TLS proxy SECURE_PROXY_SSL_HEADER=1, and the Host). CORS_ALLOWED_ORIGINS
    admits no other origin here: the cookie path is same-origin only. 403 `csrf_failed`
    otherwise; 401 without the cookie."""
    if request.headers.get(REFRESH_HEADER) != REFRESH_HEADER_VALUE:
        raise CsrfFailed(f"A refresh from the cookie needs the header {REFRESH_HEADER}: {REFRESH_HEADER_VALUE}.")
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.get_host()}":
        raise CsrfFailed("A refresh from the cookie is accepted only from this service's own origin.")
    if request.headers.get("Sec-Fetch-Site", "same-origin") != "same-origin":
        raise CsrfFailed("A refresh from the cookie is accepted only from this service's own origin.")
    raw = request.COOKIES.get(runtime_settings.AUTH_REFRESH_COOKIE_NAME)
    if not raw:
        raise NotAuthenticated("There is no refresh cookie: log in again.")
    return raw
