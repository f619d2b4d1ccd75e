"""The refresh cookie's attributes, written in one place: `accounts.refresh_cookie` sets
and reads the cookie; any answer that ends the caller's own session clears it (logout,
`DELETE /api/session/{id}`). Why each attribute: docs/security.md#the-refresh-cookie."""

from __future__ import annotations

from django.http import HttpResponseBase
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter

from core.conf import runtime_settings


def refresh_cookie_enabled() -> bool:
    return bool(runtime_settings.AUTH_REFRESH_COOKIE)


def refresh_cookie_path() -> str:
    """Sent with the refresh request only: no other request carries the token."""
    return reverse("auth-refresh")


def refresh_cookie_write(response: HttpResponseBase, value: str, *, max_age: int) -> None:
    # Secure always: browsers take loopback (http://127.0.0.1, http://localhost) as secure
    # for cookies (Chromium verified, tests/browser/test_refresh_cookie.py); any other
    # host needs HTTPS, as a token in the clear would.
    response.set_cookie(
        runtime_settings.AUTH_REFRESH_COOKIE_NAME, value, max_age=max_age, path=refresh_cookie_path(),
        secure=True, httponly=True, samesite="Strict",
    )


def refresh_cookie_clear(response: HttpResponseBase) -> None:
    """Remove the cookie (Max-Age=0), written with the attributes it was set with: a browser
    lets only a Secure answer overwrite a Secure cookie."""
    if refresh_cookie_enabled():
        refresh_cookie_write(response, "", max_age=0)


def refresh_cookie_cleared_header(status: int = 204) -> OpenApiParameter:
    """The schema's word for an answer that clears the cookie."""
    return OpenApiParameter(
        "Set-Cookie", str, OpenApiParameter.HEADER, response=[status],
        description="Clears the refresh cookie (Max-Age=0, named by AUTH_REFRESH_COOKIE_NAME; "
        "docs/security.md#the-refresh-cookie) when AUTH_REFRESH_COOKIE is on.",
    )
