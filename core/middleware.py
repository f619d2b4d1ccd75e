"""Request ids: every request gets one (a sane incoming X-Request-ID is kept), it is
returned in the response and attached to every log record written while serving it.
And the request-body limit, applied before anything parses a body."""

from __future__ import annotations

import contextvars
import io
import logging
import re
from typing import Callable

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse
from django.utils.log import log_response

from core.conf import runtime_settings
from core.exceptions import InvalidRequest, RequestTooLarge
from core.ids import local_id

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_SANE_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")


def request_id_from(incoming: str) -> str:
    """A sane incoming id (X-Request-ID) is kept; anything else gets a fresh one (unique,
    not secret: the client may choose its own)."""
    return incoming if _SANE_ID.match(incoming) else local_id()


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = request_id_from(request.headers.get("X-Request-ID", ""))
        token = request_id_var.set(request_id)
        try:
            response = self.get_response(request)
            # Django logs a 4xx/5xx response on `django.request` after the middleware
            # chain returns, when the id is reset; logged here, with the id, it is not
            # logged again (Django skips a response marked as logged).
            if response.status_code >= 400:
                log_response("%s: %s", response.reason_phrase, request.path, response=response, request=request)
        finally:
            request_id_var.reset(token)
        response["X-Request-ID"] = request_id
        return response


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class RequestBodyLimitMiddleware:
    """MAX_REQUEST_BYTES for every request, WSGI or ASGI: a larger `Content-Length` is
    413 before the body is read; a body of unknown length (chunked) is read here up to
    the limit and handed on with its length. Without this, DRF reads a body without a
    `Content-Length` as empty. (Under daphne, `symphainy.serve` refuses even earlier.)"""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = runtime_settings.MAX_REQUEST_BYTES
        declared = request.META.get("CONTENT_LENGTH") or ""
        if declared:
            try:
                length = int(declared)
            except ValueError:
                length = -1
            if length < 0:
                return _refuse(InvalidRequest("Content-Length is not a number of bytes."))
            if length > limit:
                return _refuse(RequestTooLarge(details={"limit_bytes": limit}))
        elif _has_unknown_length_body(request):
            # WSGI hands the raw (de-chunked) input; ASGI the body the server buffered.
            source = request.META.get("wsgi.input") or request
            body = source.read(limit + 1)
            if len(body) > limit:
                return _refuse(RequestTooLarge(details={"limit_bytes": limit}))
            request._stream = io.BytesIO(body)  # noqa: SLF001 - Django reads the body from here
            request._read_started = False  # noqa: SLF001
            request.META["CONTENT_LENGTH"] = str(len(body))
        return self.get_response(request)


def _has_unknown_length_body(request: HttpRequest) -> bool:
    if "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
        return True
    return isinstance(request, ASGIRequest) and request.method not in {"GET", "HEAD", "OPTIONS"}


def _refuse(exc: InvalidRequest | RequestTooLarge) -> HttpResponse:
    # Imported here: LOGGING loads this module (RequestIdFilter) before the apps are ready,
    # and core.http imports DRF's views.
    from core.http import error_response

    return error_response(exc)
