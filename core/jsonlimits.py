"""JSON from clients, parsed with the same limits on REST bodies and socket frames:
`NaN`/`Infinity` are refused (they are not JSON, and PostgreSQL's jsonb rejects them
later with a 500), and so is nesting deeper than JSON_MAX_DEPTH (the C parser would
raise RecursionError, and deep documents break every later `json.dumps` too)."""

from __future__ import annotations

import json
from typing import Any

from core.conf import runtime_settings
from core.exceptions import InvalidJson


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _depth_exceeds(value: Any, limit: int) -> bool:
    # Iterative, so a deep document cannot exhaust the stack here either.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def json_loads_bounded(data: str | bytes) -> Any:
    """`json.loads` with the client limits; ValueError (with the reason) when refused."""
    limit = runtime_settings.JSON_MAX_DEPTH
    try:
        value = json.loads(data, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError(f"nesting deeper than {limit} levels") from None
    if _depth_exceeds(value, limit):
        raise ValueError(f"nesting deeper than {limit} levels")
    return value


def frame_parse(text: str | None) -> Any:
    """A socket text frame to its JSON value, with the limits of REST bodies."""
    try:
        return json_loads_bounded(text or "")
    except ValueError as exc:
        raise InvalidJson(f"The frame is not valid JSON: {exc}") from None
