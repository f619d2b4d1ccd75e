"""The socket side of the ASGI application: the origin check, the route and the
credentials in one layer, then the consumer."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlparse

from channels.security.websocket import OriginValidator, WebsocketDenier
from django.conf import settings

from core.metrics import SOCKET_REFUSALS
from core.middleware import request_id_from, request_id_var
from realtime.consumers import RuntimeAgentConsumer
from realtime.handshake import SCOPE_CREDENTIALS, credentials_from_scope

logger = logging.getLogger(__name__)


def _header(scope: dict[str, Any], name: bytes) -> str:
    return next((value.decode("latin1") for key, value in scope.get("headers") or [] if key == name), "")


class RuntimeSocketApp:
    """The socket side of the ASGI application in one layer: the origin check, the route,
    the credentials, then the consumer.

    Channels' `OriginValidator(URLRouter([path(..., BaseMiddleware(consumer))]))` would do
    the same in four layers, and each stays suspended in a coroutine for as long as its
    socket is open, holding what it computed (the parsed origin, a copy of the scope, the
    route's dicts). Idle sockets are the memory budget, and every object they hold is
    scanned by each full pass of Python's garbage collector, which pauses the whole
    process: so one layer, one scope copy, and nothing kept but what the consumer needs.

    The token is taken out of the scope's query string, so nothing downstream can log it.
    A path with no consumer, or an origin not allowed, is denied before the handshake
    (HTTP 403), as channels' own validator does.
    """

    def __init__(self, routes: dict[str, Any]) -> None:
        # path (as the client sends it, without the root path) -> consumer class
        self.routes = routes
        self.origins = RuntimeOriginValidator(None)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        path = scope.get("path") or ""
        root_path = scope.get("root_path") or ""
        consumer_class = self.routes.get(path[len(root_path):] if path.startswith(root_path) else None)
        if consumer_class is None or not self.origins.valid_origin(_origin(scope)):
            return await WebsocketDenier()(scope, receive, send)
        # The socket's log lines carry an id, as requests' do: the handshake's X-Request-ID
        # when sane, else a fresh one. The consumer runs in this task's context.
        request_id_var.set(request_id_from(_header(scope, b"x-request-id")))
        credentials, query_string = credentials_from_scope(scope)
        # The consumer takes the credentials out of the scope; no name here keeps them.
        scope = dict(scope, query_string=query_string)
        scope[SCOPE_CREDENTIALS] = credentials
        del credentials, query_string
        return await consumer_class()(scope, receive, send)


def _origin(scope: dict[str, Any]) -> Any:
    """The Origin header parsed as channels' OriginValidator parses it (None if absent)."""
    parsed = None
    for name, value in scope.get("headers") or []:
        if name == b"origin":
            try:
                parsed = urlparse(value.decode("latin1"))
            except UnicodeDecodeError:
                pass
    return parsed


class RuntimeOriginValidator(OriginValidator):
    """Channels' origin rule against ALLOWED_HOSTS plus CORS_ALLOWED_ORIGINS (the list
    django-cors-headers reads for HTTP), read at each handshake so settings changes
    apply. A missing Origin is refused (HTTP 403). `RuntimeSocketApp` calls its
    `valid_origin`; it is not an ASGI layer of its own."""

    def __init__(self, application: Any) -> None:
        super().__init__(application, [])

    @property  # type: ignore[override]
    def allowed_origins(self) -> list[str]:
        hosts = [h for h in settings.ALLOWED_HOSTS if h != "*"]
        return [*hosts, *settings.CORS_ALLOWED_ORIGINS]

    @allowed_origins.setter
    def allowed_origins(self, value: list[str]) -> None:
        pass

    def valid_origin(self, parsed_origin: Any) -> bool:
        allowed = super().valid_origin(parsed_origin)
        if not allowed:
            SOCKET_REFUSALS.labels(reason="origin").inc()
        return allowed


# Socket paths and their consumers, behind the one layer.
websocket_application = RuntimeSocketApp({"/api/runtime/agent": RuntimeAgentConsumer})
