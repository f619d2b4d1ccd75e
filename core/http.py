"""The HTTP edge: the one translation of errors into HTTP answers.

DRF's exception handler for the API, `error_response` for everything Django answers
outside DRF (its error pages, the CSRF failure, the body limit, the admin's login
throttle); both give `core.exceptions.error_body` with the same headers.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from rest_framework import exceptions as drf
from rest_framework.response import Response
from rest_framework.views import set_rollback

from core.conf import runtime_settings
from core.exceptions import (
    DEPENDENCY_ERRORS,
    BadRequest,
    CsrfFailed,
    DependencyUnavailable,
    NotFound,
    PermissionDenied,
    RequestTooLarge,
    ServerError,
    ServiceError,
    error_body,
)

logger = logging.getLogger(__name__)

# DRF's own exceptions, mapped to the contract's machine codes.
_DRF_CODES: dict[type[drf.APIException], str] = {
    drf.ParseError: "malformed_json",
    drf.ValidationError: "invalid_request",
    drf.NotAuthenticated: "not_authenticated",
    drf.AuthenticationFailed: "invalid_token",
    drf.PermissionDenied: "permission_denied",
    drf.NotFound: "not_found",
    drf.MethodNotAllowed: "method_not_allowed",
    drf.NotAcceptable: "not_acceptable",
    drf.UnsupportedMediaType: "unsupported_media_type",
    drf.Throttled: "rate_limited",
}


def _drf_response(exc: drf.APIException) -> Response:
    headers: dict[str, str] = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if isinstance(exc, drf.Throttled) and exc.wait is not None:
        headers["Retry-After"] = str(max(1, int(exc.wait + 0.999)))
    code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "error")
    if isinstance(exc, drf.ValidationError):
        message, details = "The request is invalid.", exc.detail
    elif isinstance(exc, drf.Throttled):
        message, details = "Too many requests. Retry later.", None
    else:
        message, details = str(exc.detail), None
    return Response(error_body(code, message, details), status=exc.status_code, headers=headers)


def _headers(exc: ServiceError) -> dict[str, str]:
    headers = {"WWW-Authenticate": 'Bearer realm="api"'} if exc.status_code == 401 else {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    return headers


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's EXCEPTION_HANDLER: translate any exception into the contract's error body."""
    if isinstance(exc, Http404):
        exc = drf.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        # Django refuses to buffer a body over DATA_UPLOAD_MAX_MEMORY_SIZE before any
        # parser sees it; that is the same 413 the parser gives.
        exc = RequestTooLarge(details={"limit_bytes": runtime_settings.MAX_REQUEST_BYTES})
    elif isinstance(exc, DEPENDENCY_ERRORS):
        logger.warning("dependency unavailable: %s", exc)
        exc = DependencyUnavailable()
    # Domain errors raised while authenticating travel inside a DRF exception (see
    # accounts.authentication); answer with the domain error itself.
    exc = getattr(exc, "error", None) if isinstance(getattr(exc, "error", None), ServiceError) else exc
    set_rollback()
    if isinstance(exc, ServiceError):
        return Response(exc.as_body(), status=exc.status_code, headers=_headers(exc))
    if isinstance(exc, drf.APIException):
        return _drf_response(exc)
    if isinstance(exc, DatabaseError):
        logger.exception("database error")
    else:
        logger.exception("unhandled error in %s", context.get("view").__class__.__name__)
    return Response(ServerError().as_body(), status=ServerError.status_code)


def error_response(exc: ServiceError) -> JsonResponse:
    """A declared error as a Django response, for code outside DRF's views: the same body
    and headers as `exception_handler` gives."""
    return JsonResponse(
        exc.as_body(), status=exc.status_code, headers=_headers(exc), json_dumps_params={"separators": (",", ":")}
    )


# Django-level handlers, for errors raised outside DRF views (unknown paths, bad Host).
def handler400(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(BadRequest())


def handler403(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(PermissionDenied())


def handler404(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(NotFound())


def handler500(request: HttpRequest) -> JsonResponse:
    return error_response(ServerError())


def csrf_failure(request: HttpRequest, reason: str = "") -> JsonResponse:
    """CSRF_FAILURE_VIEW: the contract's error body instead of Django's HTML page (the
    admin's forms are the only CSRF-protected views; the API uses bearer tokens)."""
    return error_response(CsrfFailed())


def request_too_large_response_bytes(limit: int) -> bytes:
    """A complete HTTP/1.1 413 response with the contract's body, for a server that must
    answer before the request reaches Django (see `symphainy.serve.BoundedWebRequest`)."""
    body = json.dumps(RequestTooLarge(details={"limit_bytes": limit}).as_body(), separators=(",", ":")).encode()
    head = (
        "HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


FAVICON = Path(__file__).resolve().parent / "static" / "core" / "favicon.ico"


def favicon(request: HttpRequest) -> HttpResponse:
    """`/favicon.ico`, which browsers ask for on every page without an icon link (the
    admin's): the product's icon, from the installed package, cached for a day."""
    response = HttpResponse(FAVICON.read_bytes(), content_type="image/x-icon")
    response["Cache-Control"] = "public, max-age=86400"
    return response
