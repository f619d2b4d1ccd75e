"""The socket side of the ASGI application: the origin check, the route and the
credentials in one layer, then the consumer."""

from __future__ import annotations

import logging
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

from core.metrics import SOCKET_REFUSALS
from core.middleware import request_id_from, request_id_var
from realtime.consumers import RuntimeAgentConsumer
from realtime.handshake import SCOPE_CREDENTIALS, credentials_from_scope

logger = logging.getLogger(__name__)


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    return next((value.decode("latin1") for key, value in scope.get("headers") or [] if key == name), None)


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
    A path with no consumer, or an origin not allowed (`socket_origin_allowed`), is denied
    before the handshake (HTTP 403), as channels' own validator does.
    """

    def __init__(self, routes: dict[str, Any]) -> None:
        # path (as the client sends it, without the root path) -> consumer class
        self.routes = routes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        path = scope.get("path") or ""
        root_path = scope.get("root_path") or ""
        consumer_class = self.routes.get(path[len(root_path):] if path.startswith(root_path) else None)
        if consumer_class is None or not socket_origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        # The socket's log lines carry an id, as requests' do: the handshake's X-Request-ID
        # when sane, else a fresh one. The consumer runs in this task's context.
        request_id_var.set(request_id_from(_header(scope, b"x-request-id") or ""))
        credentials, query_string = credentials_from_scope(scope)
        # The consumer takes the credentials out of the scope; no name here keeps them.
        scope = dict(scope, query_string=query_string)
        scope[SCOPE_CREDENTIALS] = credentials
        del credentials, query_string
        return await consumer_class()(scope, receive, send)


class Origin(NamedTuple):
    """An RFC 6454 origin: scheme, host and port, the port always explicit."""

    scheme: str
    host: str  # lower case; an IPv6 address in brackets, as ALLOWED_HOSTS writes it
    port: int | None

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


_DEFAULT_PORTS = {"http": 80, "https": 443}
_SOCKET_SCHEMES = {"ws": "http", "wss": "https", "http": "http", "https": "https"}


def origin_parse(value: str) -> Origin | None:
    """`scheme://host[:port]` as an Origin (default port filled in), or None when `value`
    is not a serialised origin: "null", a path, credentials, a port out of range."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname or parts.username is not None or parts.password is not None:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    scheme, host = parts.scheme.lower(), parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return Origin(scheme, host, port if port is not None else _DEFAULT_PORTS.get(scheme))


def _own_scheme(scope: dict[str, Any]) -> str:
    """The scheme the client used: the scope's (`ws`/`wss`), unless Django is told to
    believe a proxy's header (SECURE_PROXY_SSL_HEADER), which then decides as it does for
    `request.is_secure()`."""
    proxy_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy_header:
        name, secure_value = proxy_header
        forwarded = _header(scope, name.removeprefix("HTTP_").lower().replace("_", "-").encode("latin1"))
        if forwarded is not None:
            return "https" if forwarded.split(",", 1)[0].strip() == secure_value else "http"
    return _SOCKET_SCHEMES.get(scope.get("scheme") or "ws", "http")


def request_origin(scope: dict[str, Any]) -> Origin | None:
    """The origin the client addressed: its scheme, and the host and port of its Host
    header (behind nginx, `$http_host`, which keeps the port). Without a Host header
    (no browser omits it) the scheme's default port; None for a Host that does not parse."""
    scheme = _own_scheme(scope)
    host_header = _header(scope, b"host")
    if host_header is None:
        return Origin(scheme, "", _DEFAULT_PORTS[scheme])
    host, port = split_domain_port(host_header)
    if not host or not (port == "" or port.isdigit()):
        return None
    return Origin(scheme, host, int(port) if port else _DEFAULT_PORTS[scheme])


def socket_origin_allowed(scope: dict[str, Any]) -> bool:
    """The Origin check against cross-site socket hijacking, by RFC 6454 origin (scheme,
    host and port): an Origin is allowed when it is the service's own, its host one of
    ALLOWED_HOSTS and its scheme and port those of the request, or when it is exactly one
    of CORS_ALLOWED_ORIGINS (the list django-cors-headers reads for HTTP), default ports
    filled in. So `https://host` or `http://host:1`, another application on the same host,
    cannot open sockets with a server at `http://host:8000`. A missing, repeated or
    malformed Origin is refused. Settings are read at each handshake."""
    values = [value.decode("latin1") for name, value in scope.get("headers") or [] if name == b"origin"]
    origin = origin_parse(values[0]) if len(values) == 1 else None
    allowed = origin is not None and (
        origin in {origin_parse(entry) for entry in settings.CORS_ALLOWED_ORIGINS}
        or (
            (own := request_origin(scope)) is not None
            and (origin.scheme, origin.port) == (own.scheme, own.port)
            and validate_host(origin.host, [host for host in settings.ALLOWED_HOSTS if host != "*"])
        )
    )
    if not allowed:
        SOCKET_REFUSALS.labels(reason="origin").inc()
        # Says why to an operator whose proxy does not pass the port or the scheme.
        logger.info("socket origin %.100r refused: the request's own origin is %s",
                    values[0] if values else None, request_origin(scope))
    return allowed


# Socket paths and their consumers, behind the one layer.
websocket_application = RuntimeSocketApp({"/api/runtime/agent": RuntimeAgentConsumer})
