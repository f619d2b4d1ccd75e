"""Liveness (`/live`: the process answers; no dependency is asked, so a Redis blip does
not get every process restarted) and readiness (`/ready`, and `/health` as the contract
names it: the database and the channel layer answer, and the process is not stopping), and the middleware that lets probes
and scrapes in by IP."""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.urls import resolve
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from realtime.drain import draining

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


class LivenessApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(
        auth=[],
        responses={(200, "application/json"): inline_serializer("Liveness", {"status": serializers.CharField()})},
    )
    def get(self, request: Request) -> Response:
        return Response({"status": "ok"})


class ReadinessApi(APIView):
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
        if draining():  # stopping: send nothing new here (docs/deployment.md)
            return Response({"status": "draining", "checks": {}}, status=503)
        checks = {
            "database": "ok" if database_check() else "unavailable",
            "channel_layer": "ok" if channel_layer_check() else "unavailable",
        }
        healthy = all(value == "ok" for value in checks.values())
        return Response({"status": "ok" if healthy else "unavailable", "checks": checks}, status=200 if healthy else 503)


PROBE_PATHS = frozenset({"/live", "/health", "/ready", "/metrics"})


class ProbeMiddleware:
    """Serves the probe and scrape paths before any middleware validates the Host header.

    Kubernetes probes and Prometheus come by pod IP, which ALLOWED_HOSTS rightly refuses
    (400); opening ALLOWED_HOSTS to "*" would let any Host through everywhere. These three
    paths build no URL from the Host, so they are dispatched here, through the URLconf,
    whatever the Host says. Every other path goes on to the usual checks.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info not in PROBE_PATHS:
            return self.get_response(request)
        match = resolve(request.path_info)
        request.resolver_match = match
        response = match.func(request, *match.args, **match.kwargs)
        # A DRF Response is rendered by Django's handler after the view; not reached here.
        return response.render() if hasattr(response, "render") else response
