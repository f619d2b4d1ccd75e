"""Baseline (a): a Channels consumer that accepts with no checks, on the same settings."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "symphainy.settings")
django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402


class BareConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        offered = self.scope.get("subprotocols") or []
        await self.accept(subprotocol="symphainy.v1" if "symphainy.v1" in offered else None)


application = ProtocolTypeRouter({"websocket": URLRouter([path("bare", BareConsumer.as_asgi())])})
