"""Request ids: every request gets one (a sane incoming X-Request-ID is kept), it is
returned in the response and attached to every log record written while serving it."""

from __future__ import annotations

import contextvars
import logging
import re
import uuid
from typing import Callable

from django.http import HttpRequest, HttpResponse
from django.utils.log import log_response

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_SANE_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")


def request_id_from(incoming: str) -> str:
    """A sane incoming id (X-Request-ID) is kept; anything else gets a fresh one."""
    return incoming if _SANE_ID.match(incoming) else uuid.uuid4().hex


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
