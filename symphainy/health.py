"""Liveness and readiness: is the database reachable, is the channel layer reachable."""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

logger = logging.getLogger(__name__)
CHECK_TIMEOUT_S = 2.0


def database_check() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        logger.warning("health: database unreachable", exc_info=True)
        return False


async def _channel_layer_roundtrip() -> None:
    layer = get_channel_layer()
    channel = await layer.new_channel("health.")
    await layer.send(channel, {"type": "health.ping"})
    await layer.receive(channel)


def channel_layer_check() -> bool:
    """Send a message to a fresh channel and read it back, within a short timeout."""

    async def check() -> None:
        await asyncio.wait_for(_channel_layer_roundtrip(), CHECK_TIMEOUT_S)

    try:
        async_to_sync(check)()
        return True
    except Exception:  # noqa: BLE001
        logger.warning("health: channel layer unreachable", exc_info=True)
        return False


class HealthApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(
        auth=[],
        responses={
            (200, "application/json"): inline_serializer(
                "Health", {"status": serializers.CharField(), "checks": serializers.DictField()}
            )
        },
    )
    def get(self, request: Request) -> Response:
        checks = {
            "database": "ok" if database_check() else "unavailable",
            "channel_layer": "ok" if channel_layer_check() else "unavailable",
        }
        healthy = all(value == "ok" for value in checks.values())
        return Response({"status": "ok" if healthy else "unavailable", "checks": checks}, status=200 if healthy else 503)
