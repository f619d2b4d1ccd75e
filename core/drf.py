"""DRF plumbing loaded through REST_FRAMEWORK settings (the JSON parser, pagination) and
used by the authentication class (the client address); and the schema's share of it: the
error body as one OpenAPI component (`error_responses`) and a page's shape (`page_of`).

Kept apart from `core.http`, which imports DRF's views: DRF resolves these classes
while its views module is still being imported.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from django.core.validators import RegexValidator
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import exceptions as drf
from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import JSONParser
from rest_framework.settings import api_settings

from core.conf import runtime_settings
from core.exceptions import InvalidRequest, RequestTooLarge
from core.jsonlimits import json_loads_bounded


class BoundedJSONParser(JSONParser):
    """JSON parser that refuses bodies over MAX_REQUEST_BYTES with 413.

    DRF's JSONParser streams the body without looking at Django's upload limit, so the
    limit is enforced here, before anything is decoded.
    """

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        limit = runtime_settings.MAX_REQUEST_BYTES
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise RequestTooLarge(details={"limit_bytes": limit})
        try:
            return json_loads_bounded(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise drf.ParseError(f"The body is not valid JSON: {exc}") from None


class Pagination(PageNumberPagination):
    """`?page=` (from 1) and `?page_size=` (at most 200; more is read as 200). A value that
    is not a positive integer is 400 (DRF would read it as the default); a page past the
    last is 404, as DRF answers it."""

    page_size_query_param = "page_size"
    max_page_size = 200
    last_page_strings = ()  # DRF's undocumented `?page=last`: a page is a number

    def get_page_number(self, request: Any, paginator: Any) -> int:
        return _positive_int(request.query_params, self.page_query_param, default=1)

    def get_page_size(self, request: Any) -> int:
        size = _positive_int(request.query_params, self.page_size_query_param, default=self.page_size)
        return min(size, self.max_page_size)

    @classmethod
    def schema_parameters(cls) -> list[OpenApiParameter]:
        """The two query parameters as the schema states them."""
        return [
            OpenApiParameter(cls.page_query_param, {"type": "integer", "minimum": 1}, description="The page, from 1."),
            OpenApiParameter(
                cls.page_size_query_param, {"type": "integer", "minimum": 1},
                description=f"Items per page (default {api_settings.PAGE_SIZE}); more than "
                f"{cls.max_page_size} is read as {cls.max_page_size}.",
            ),
        ]


def _positive_int(params: Any, name: str, *, default: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw[:19]) < 1:
        raise InvalidRequest(details={name: [f"Must be a positive integer, not {raw[:32]!r}."]})
    return int(raw) if len(raw) < 19 else 10**18  # past any page, over any page size


def page_of(item: type[serializers.Serializer], name: str) -> serializers.Serializer:
    """The schema of one page of `item`s, as `Pagination.get_paginated_response` answers it."""
    fields = {
        "count": serializers.IntegerField(min_value=0, help_text="Items on all pages."),
        "next": serializers.URLField(allow_null=True, help_text="The next page, or null on the last."),
        "previous": serializers.URLField(allow_null=True, help_text="The previous page, or null on the first."),
        "results": item(many=True),
    }
    page = type(name, (serializers.Serializer,), {**fields, "Meta": type("Meta", (), {"ref_name": name})})
    return page()


# --- The error body in the schema -------------------------------------------------------
class ErrorSerializer(serializers.Serializer):
    """The body of every error answer (`core.exceptions.error_body`)."""

    class Meta:
        ref_name = "Error"

    error = serializers.CharField(help_text="The machine code, e.g. `invalid_request`, `not_found`.")
    message = serializers.CharField(help_text="What went wrong, for people.")
    details = serializers.JSONField(
        required=False, help_text="More about it when there is more, e.g. the problems per field for `invalid_request`."
    )


_ERRORS: dict[int, str] = {
    400: "Invalid input: a body that is not JSON (`malformed_json`), or a field, header or query value "
    "that breaks the stated constraints (`invalid_request`, problems per field in `details`).",
    401: "No token, an invalid or expired one (`not_authenticated`, `invalid_token`, `token_expired`, "
    "`invalid_credentials`), or its session has ended (`session_ended`).",
    403: "Authenticated but not allowed (`permission_denied`, `tenant_access_denied`, `registration_closed`, "
    "`session_policy_violation`), or a refresh from the cookie that is not the page's own (`csrf_failed`).",
    404: "Not found, or not the caller's to see (`not_found`).",
    409: "In conflict with the current state (`conflict`, `session_not_active`, `email_taken`, "
    "`idempotency_in_flight`, `execution_finished`).",
    412: "If-Match names a version that is not the current one (`version_conflict`).",
    413: "The body is over MAX_REQUEST_BYTES (`request_too_large`).",
    415: "The body is not `application/json` (`unsupported_media_type`).",
    422: "The idempotency key was used with another body (`idempotency_key_reused`).",
    428: "The If-Match header is missing (`precondition_required`).",
    429: "Too many requests (`rate_limited`, `too_many_answers`); `Retry-After` says when to retry.",
    503: "A dependency (database, Redis) is unavailable or the server is overloaded "
    "(`service_unavailable`, `overloaded`).",
}


def error_responses(*statuses: int) -> dict[int, OpenApiResponse]:
    """The error answers of an operation, each with the `Error` body, for `extend_schema`'s
    `responses`."""
    return {status: OpenApiResponse(ErrorSerializer, description=_ERRORS[status]) for status in statuses}


def client_address(request: Any) -> str | None:
    """The caller's address as the throttles see it (X-Forwarded-For only behind
    TRUSTED_PROXY_COUNT proxies), or None when it is not an IP address."""
    from rest_framework.throttling import BaseThrottle

    ident = BaseThrottle().get_ident(request)
    try:
        return str(ipaddress.ip_address(ident.strip()))
    except (ValueError, AttributeError):
        return None


# --- Text in a request, and its schema ----------------------------------------------------
class OnlyStrings:
    """For a CharField (or a subclass): a JSON string only. DRF's own turns 12 into "12",
    which the schema (`type: string`) does not allow."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid")  # type: ignore[attr-defined]
        return super().to_internal_value(data)  # type: ignore[misc]


class TextField(OnlyStrings, serializers.CharField):
    """The request's text fields: a string, as the schema says."""


class EmailTextField(OnlyStrings, serializers.EmailField):
    """An email address, as a string."""


class RegexTextField(OnlyStrings, serializers.RegexField):
    """A string matching a pattern (in the schema too)."""


class FlagField(serializers.BooleanField):
    """A JSON `true` or `false` only. DRF's own also takes "yes", 1 and "on", which the
    schema (`type: boolean`) does not allow."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


def text_pattern(field: serializers.CharField) -> str:
    """The values DRF's CharField accepts in a request, as a pattern: no NUL character
    anywhere, and, unless blank is allowed, not empty (nor only whitespace, when it trims)."""
    if field.allow_blank:  # drf-spectacular adds the empty string beside a pattern (oneOf)
        return r"^[^\u0000]+$"
    if field.trim_whitespace:
        return r"^[^\u0000]*[^\s\u0000][^\u0000]*$"
    return r"^[^\u0000]+$"


class TextFieldSchema(OpenApiSerializerFieldExtension):
    """`text_pattern` in the schema of every request's CharField that has no pattern of its own."""

    target_class = "rest_framework.fields.CharField"
    match_subclasses = True

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        field = self.target
        if any(isinstance(v, RegexValidator) for v in field.validators):
            return schema  # its own pattern says more (e.g. RegexField)
        if direction == "request" and schema.get("type") == "string" and not {"pattern", "enum"} & set(schema):
            schema["pattern"] = text_pattern(field)
        return schema
