"""The intent handlers that ship with the runtime.

A handler is an `async def handler(ctx: ExecutionContext) -> result` registered by name in
`SYMPHAINY["INTENT_HANDLERS"]`; its return value (JSON) becomes the execution's result, an
exception makes it `failed`. It reports progress with `await ctx.progress(...)`, which is
also where a cancellation reaches it (as `ExecutionCancelled`). An optional
`handler.validate_parameters(parameters)` runs at submission and raises `InvalidRequest`,
so bad parameters are a 400 rather than a failed execution.
"""

from __future__ import annotations

import asyncio
from typing import Any

from core.conf import runtime_settings
from core.exceptions import InvalidRequest
from sessions_runtime.runner import ExecutionContext

MAX_BATCH_ITEMS = 1_000
MAX_ITEM_DELAY_S = 5.0


async def echo(ctx: ExecutionContext) -> dict[str, Any]:
    """Returns its parameters."""
    await ctx.progress(total=1, processed=1, succeeded=1, failed=0)
    return {"echo": ctx.parameters}


def _batch_validate(parameters: dict[str, Any]) -> None:
    items = parameters.get("items")
    if not isinstance(items, list) or len(items) > MAX_BATCH_ITEMS:
        raise InvalidRequest(f"'items' must be a list of at most {MAX_BATCH_ITEMS} items.")
    delay = parameters.get("delay_s")
    if delay is not None and (not isinstance(delay, (int, float)) or isinstance(delay, bool) or not 0 <= delay <= MAX_ITEM_DELAY_S):
        raise InvalidRequest(f"'delay_s' must be a number from 0 to {MAX_ITEM_DELAY_S}.")


async def batch(ctx: ExecutionContext) -> dict[str, Any]:
    """Processes `items` one by one, `delay_s` apart (default BATCH_ITEM_DELAY), reporting
    progress after each. An item `{"fail": true}` counts as failed; the rest succeed."""
    items = ctx.parameters["items"]
    delay = ctx.parameters.get("delay_s", runtime_settings.BATCH_ITEM_DELAY)
    succeeded = failed = 0
    await ctx.progress(total=len(items), processed=0, succeeded=0, failed=0)
    for index, item in enumerate(items, start=1):
        await asyncio.sleep(delay)
        if isinstance(item, dict) and item.get("fail") is True:
            failed += 1
        else:
            succeeded += 1
        await ctx.progress(processed=index, succeeded=succeeded, failed=failed)
    return {"processed": len(items), "succeeded": succeeded, "failed": failed}


batch.validate_parameters = _batch_validate  # type: ignore[attr-defined]
