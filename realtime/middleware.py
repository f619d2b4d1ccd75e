"""ASGI middleware in front of the socket consumer: where the credentials are, and whether
the origin may open a socket at all."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlparse

from channels.db import database_sync_to_async
from channels.security.websocket import OriginValidator, WebsocketDenier
from django.conf import settings

from accounts.tokens import TokenClaims
from core.metrics import SOCKET_REFUSALS
from core.middleware import request_id_from, request_id_var
from realtime.services import SocketGrant, socket_authorize, socket_authorize_cached
from sessions_runtime.access import access_cache_get

SUBPROTOCOL = "symphainy.v1"
BEARER_SUBPROTOCOL_PREFIX = "bearer."
TOKEN_QUERY_PARAMS = ("access_token", "session_token")
SCOPE_CREDENTIALS = "runtime_credentials"
logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SocketCredentials:
    token: str | None
    session_id: str | None
    subprotocol: str | None
    # Resume: the last position the client saw (`?since=`) and the log's epoch then.
    since: int | None = None
    epoch: str | None = None


def credentials_from_scope(scope: dict[str, Any]) -> tuple[SocketCredentials, bytes]:
    """Find the token (subprotocol, then Authorization header, then legacy query) and the
    requested session. Also returns the query string with any token removed."""
    offered = [p for p in scope.get("subprotocols") or [] if isinstance(p, str)]
    token = next((p[len(BEARER_SUBPROTOCOL_PREFIX):] for p in offered if p.startswith(BEARER_SUBPROTOCOL_PREFIX)), None)
    if token is None:
        for name, value in scope.get("headers") or []:
            if name == b"authorization":
                parts = value.decode("latin1").split()
                if len(parts) == 2 and parts[0].lower() == "bearer":
                    token = parts[1]
                break
    query = parse_qsl((scope.get("query_string") or b"").decode("latin1"), keep_blank_values=True)
    if token is None:
        token = next((v for k, v in query if k in TOKEN_QUERY_PARAMS and v), None)
    session_id = next((v for k, v in query if k == "session_id"), None)
    cleaned = urlencode([(k, v) for k, v in query if k not in TOKEN_QUERY_PARAMS]).encode("latin1")
    subprotocol = SUBPROTOCOL if SUBPROTOCOL in offered else None
    since_text = next((v for k, v in query if k == "since"), None)
    # A `since` that is no position at all (not a whole number >= 0) is answered like a
    # position the log no longer holds: recovered false, the client re-reads state.
    since = -1 if since_text is not None else None
    # ASCII digits only: str.isdigit() also takes '²', which int() refuses.
    if since_text is not None and since_text.isascii() and since_text.isdigit() and len(since_text) <= 18:
        since = int(since_text)
    epoch = next((v for k, v in query if k == "epoch"), None)
    return SocketCredentials(
        token=token or None, session_id=session_id, subprotocol=subprotocol, since=since, epoch=epoch
    ), cleaned


async def authorize_claims(claims: TokenClaims, requested_session_id: str | None) -> SocketGrant:
    """The grant for a decoded token and the requested session: from this process's
    snapshot of the token's session when it can answer, else from the database. Raises
    the ServiceError the socket is refused with."""
    cached = await access_cache_get(claims.session_id)
    if cached is not None:
        grant = socket_authorize_cached(claims=claims, requested_session_id=requested_session_id, access=cached)
        if grant is not None:
            return grant
    return await database_sync_to_async(socket_authorize)(claims=claims, requested_session_id=requested_session_id)


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
