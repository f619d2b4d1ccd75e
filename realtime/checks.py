"""System checks for the socket gateway's settings: the message rate is parsed by the
same function the consumer uses, so a value `check` accepts is one every socket accepts."""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, register

from core.checks import HINT
from core.conf import runtime_settings
from realtime.ratelimit import parse_rate


@register()
def check_socket_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """realtime.E001: WS_MESSAGE_RATE does not parse."""
    rate = runtime_settings.WS_MESSAGE_RATE
    try:
        parse_rate(rate if isinstance(rate, str) else "")
    except ValueError:
        return [Error(
            f"SYMPHAINY['WS_MESSAGE_RATE'] must be a rate like '60/10s', '5/s' or '100/min' "
            f"(a count of at least 1 per a period), not {rate!r}.",
            hint=HINT, id="realtime.E001",
        )]
    return []
