"""DRF plumbing loaded through REST_FRAMEWORK settings (the JSON parser, pagination) and
used by the authentication class (the client address).

Kept apart from `core.http`, which imports DRF's views: DRF resolves these classes
while its views module is still being imported.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from rest_framework import exceptions as drf
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import JSONParser

from core.conf import runtime_settings
from core.exceptions import RequestTooLarge
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
    page_size_query_param = "page_size"
    max_page_size = 200


def client_address(request: Any) -> str | None:
    """The caller's address as the throttles see it (X-Forwarded-For only behind
    TRUSTED_PROXY_COUNT proxies), or None when it is not an IP address."""
    from rest_framework.throttling import BaseThrottle

    ident = BaseThrottle().get_ident(request)
    try:
        return str(ipaddress.ip_address(ident.strip()))
    except (ValueError, AttributeError):
        return None
