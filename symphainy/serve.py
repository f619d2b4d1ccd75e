"""The daphne fixes this application needs, and `python -m symphainy.serve`.

`daphne_protections_install()` changes daphne in place: every path that reaches the
access log has its token query parameters redacted (the legacy socket transport carries
`?access_token=`); the close codes 1009, 1011 and 1013 reach the client, as do the
protocol-violation codes 1002 and 1007; a peer that stops reading is dropped (see
`SymphainyWebSocketProtocol`), and one slow to answer a close frame gets a FIN, not a reset; a body over MAX_REQUEST_BYTES is refused before it is
read (`BoundedWebRequest`); SIGTERM and SIGINT drain the process (`realtime.drain`) before
daphne stops it. `symphainy.asgi` installs them whenever it is imported, so
`daphne symphainy.asgi:application` and `manage.py runserver` get them too.

`python -m symphainy.serve [daphne options]` is daphne's own command line with the
application defaulting to `symphainy.asgi:application`. Daphne's WebSocket ping keeps
idle sockets honest: `--ping-interval` (default 20 s) and `--ping-timeout` (default
30 s) drop peers that stop answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import re
import sys
from typing import Any

from autobahn.websocket import protocol as autobahn_protocol
from daphne import http_protocol
from daphne.access import AccessLogGenerator
from daphne.cli import CommandLineInterface
from daphne.http_protocol import WebRequest
from daphne.server import Server
from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from core.exceptions import CloseCode
from core.logs import access_line, redact
from symphainy.reaper import note_application, reaper_install, reaper_installed
from symphainy.writes import direct_writes_install, direct_writes_installed

APPLICATION = "symphainy.asgi:application"
logger = logging.getLogger(__name__)
access_logger = logging.getLogger("daphne.access")


def send_buffer_limit() -> int:
    from core.conf import runtime_settings

    return runtime_settings.WS_MAX_SEND_BUFFER_BYTES


# Close codes RFC 6455 registers for endpoints (message too big, internal error, try again
# later). Autobahn's `sendClose` only lets an application send 1000 and 3000-4999 and
# raises on the rest, which would leave such a socket open; these go out as close frames
# directly.
ENDPOINT_CLOSE_CODES = frozenset(
    {CloseCode.MESSAGE_TOO_BIG, CloseCode.SERVER_ERROR, CloseCode.SERVICE_RESTART, CloseCode.TRY_AGAIN_LATER}
)


# The ASGI scope extension through which an application waits for a socket's send buffer
# to drain (realtime.consumers reads it by this name): {"drained": async () -> None}.
SEND_BUFFER_EXTENSION = "symphainy.send_buffer"


@implementer(IPushProducer)
class SendBufferGuard:
    """Told by Twisted when a socket's outgoing buffer passes its high-water mark (the
    peer is not reading as fast as we write) and when it drains again; `drained()` waits
    for the second, so a sender that awaits it never outruns its peer."""

    __slots__ = ("paused", "pending", "waiters")

    def __init__(self) -> None:
        self.paused, self.pending = False, 0
        self.waiters: list[asyncio.Future] | None = None

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused, self.pending = False, 0
        self.release()

    def stopProducing(self) -> None:
        self.paused = False
        self.release()

    def release(self) -> None:
        """Wake every `drained()` waiter (the buffer drained, or the connection is gone)."""
        waiters, self.waiters = self.waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    async def drained(self) -> None:
        # Twisted runs on this asyncio loop (daphne installs its asyncio reactor), so the
        # producer calls above resolve these futures on the loop's own thread.
        while self.paused:
            waiter = asyncio.get_running_loop().create_future()
            if self.waiters is None:
                self.waiters = []
            self.waiters.append(waiter)
            await waiter


# The connection (an HTTP request or a socket) whose daphne call is writing an access line.
_access_protocol: contextvars.ContextVar[Any] = contextvars.ContextVar("access_protocol", default=None)


@contextlib.contextmanager
def access_logged_for(protocol: Any) -> Any:
    token = _access_protocol.set(protocol)
    try:
        yield
    finally:
        _access_protocol.reset(token)


class SymphainyWebSocketProtocol(WebSocketProtocol):
    _send_guard: SendBufferGuard | None = None

    def _connectionMade(self) -> None:
        super()._connectionMade()
        # Autobahn drops the TCP connection on a protocol violation (invalid UTF-8, a bad
        # frame) unless told otherwise; a close frame with the code (1007, 1002) tells
        # the client why.
        self.failByDrop = False
        # Daphne writes every frame to the transport at once, and Twisted buffers without
        # limit: a peer that stops reading would grow this process's memory for as long
        # as events reach its session. The guard cuts such a peer off instead; a sender
        # with much to say (a replay) awaits `send_drained()` between frames instead.
        self._send_guard = SendBufferGuard()
        with contextlib.suppress(RuntimeError):  # the HTTP channel's producer, if any
            self.transport.unregisterProducer()
        self.transport.registerProducer(self._send_guard, True)

    async def send_drained(self) -> None:
        """Return once this socket's send buffer is under Twisted's high-water mark (at
        once if it is, or when the connection is gone)."""
        guard = self._send_guard
        if guard is not None:
            await guard.drained()

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        guard = self._send_guard
        if guard is not None and guard.paused:
            guard.pending += len(data)
            if guard.pending > send_buffer_limit():
                logger.warning("peer %s stopped reading; dropping it", self.peer)
                self._send_guard = None
                guard.release()
                self.transport.abortConnection()
                return
        super().sendData(data, sync=sync, chopsize=chopsize)

    def onCloseHandshakeTimeout(self) -> None:
        """Autobahn aborts a connection whose peer has not answered our close frame within
        its closeHandshakeTimeout (1 s): a TCP reset, which can reach a peer slower than that
        (a browser on a busy machine, a drain's 1012) before it has read the close frame, and
        Chromium then reports 1006 instead of the code. Here the connection is closed with a
        FIN after the frame instead, so the peer reads the code whenever it catches up."""
        self.closeHandshakeTimeoutCall = None
        if self.state != self.STATE_CLOSED:
            self.wasClean = False
            self.wasNotCleanReason = "the peer did not answer the close frame in time"
            self.wasCloseHandshakeTimeout = True
            self.dropConnection(abort=False)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        guard = self._send_guard
        if guard is not None:
            self._send_guard = None
            guard.release()
        with access_logged_for(self):
            super().onClose(wasClean, code, reason)

    # daphne writes the socket's access lines from these: with its request id.
    def applicationCreateWorked(self, application_queue: Any) -> None:
        with access_logged_for(self):
            super().applicationCreateWorked(application_queue)

    def onOpen(self) -> None:
        with access_logged_for(self):
            super().onOpen()

    def serverReject(self) -> None:
        with access_logged_for(self):
            super().serverReject()

    def serverClose(self, code: int | None = None) -> None:
        if code in ENDPOINT_CLOSE_CODES:
            self.sendCloseFrame(code=code, isReply=False)
        else:
            super().serverClose(code=code)


def _request_body_limit() -> int:
    from core.conf import runtime_settings

    return runtime_settings.MAX_REQUEST_BYTES


class BoundedWebRequest(WebRequest):
    """Twisted reads a whole request body (into a temporary file past 100 KB) before
    daphne sees the request, so the limit is applied here: a `Content-Length` over
    MAX_REQUEST_BYTES is refused before any body byte is read, and a chunked body is cut
    off as soon as it passes the limit. Either way: 413 with the contract's body, then close."""

    _body_refused = False
    _body_received = 0

    def _refuse_body(self) -> None:
        from core.http import request_too_large_response_bytes  # needs Django set up

        self._body_refused = True
        self.content = None
        transport = self.channel.transport
        transport.write(request_too_large_response_bytes(_request_body_limit()))
        transport.loseConnection()

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > _request_body_limit():
            self._refuse_body()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._body_refused:
            return
        self._body_received += len(data)
        if self._body_received > _request_body_limit():
            self._refuse_body()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if not self._body_refused:
            super().requestReceived(command, path, version)

    def handle_reply(self, message: dict[str, Any]) -> None:
        if message.get("type") == "http.response.start":
            # The id the service answered with (X-Request-ID), which its own lines carry.
            for name, value in message.get("headers") or []:
                if bytes(name).lower() == b"x-request-id":
                    self.access_request_id = bytes(value).decode("latin-1")
        with access_logged_for(self):
            super().handle_reply(message)

    def process(self) -> None:
        super().process()
        channel = self.channel
        if self.transport is None and channel is not None and self in channel.requests:
            # Daphne handed the connection to a WebSocket protocol (it sets the request's
            # transport to None only then). The HTTP channel and this request still refer
            # to each other: a cycle of some twenty objects that only the garbage
            # collector's full pass frees, and until then it is scanned on every pass, for
            # every socket. Leaving the channel's list frees both as this call returns.
            channel.requests.remove(self)


# A socket's access lines: daphne's action, its word in the line, and the status it stands for.
_SOCKET_ACTIONS = {
    "connecting": ("WSCONNECTING", None), "connected": ("WSCONNECT", 101),
    "rejected": ("WSREJECT", 403), "disconnected": ("WSDISCONNECT", None),
}


class LoggingAccessLog(AccessLogGenerator):
    """Daphne's access lines, written through the `daphne.access` logger instead of straight
    to a stream, so they take the run's LOG_FORMAT: with LOG_FORMAT=json, method, path, status,
    duration, bytes, client and request id are keys of their own (`core.logs.access_line`)."""

    def __init__(self) -> None:
        super().__init__(stream=None)

    def __call__(self, protocol: str, action: str, details: dict[str, Any]) -> None:
        client = details.get("client") or "-"
        address = client.rsplit(":", 1)[0].strip("[]") if client != "-" else None
        request_id = getattr(_access_protocol.get(), "access_request_id", None)
        if protocol == "http" and action == "complete":
            status, size = details.get("status"), details.get("size")
            access_line(
                access_logger, '%s - - "%s %s" %s %s', client, details["method"], details["path"], status or "-",
                size or "-", method=details["method"], path=details["path"], status=status,
                duration_s=details.get("time_taken"), size=size, client=address, request_id=request_id,
            )
        elif protocol == "websocket" and action in _SOCKET_ACTIONS:
            word, status = _SOCKET_ACTIONS[action]
            access_line(
                access_logger, '%s - - "%s %s" - -', client, word, details["path"], method="GET", path=details["path"],
                status=status, duration_s=None, size=None, client=address, request_id=request_id, socket=action,
            )


_server_init = Server.__init__
_server_log_action = Server.log_action
_server_create_application = Server.create_application
# Endpoint kinds whose Twisted parser takes a `backlog` (an adopted `fd:` already listens).
_BACKLOG_KINDS = frozenset({"tcp", "tcp6", "unix", "ssl"})


def with_listen_backlog(endpoints: list[str] | None) -> list[str]:
    """Twisted listens with a backlog of 50 unless the endpoint says otherwise: when
    thousands of clients reconnect at once (a deploy, a network blip), connections past
    the fiftieth wait for SYN retries, seconds each. Each endpoint without a backlog of
    its own gets SERVER_LISTEN_BACKLOG (the kernel caps it at net.core.somaxconn)."""
    from core.conf import runtime_settings

    backlog = runtime_settings.SERVER_LISTEN_BACKLOG
    out = []
    for endpoint in endpoints or []:
        kind = endpoint.split(":", 1)[0].strip()
        if kind in _BACKLOG_KINDS and not re.search(r"(^|(?<!\\):)backlog=", endpoint):
            endpoint = f"{endpoint}:backlog={backlog}"
        out.append(endpoint)
    return out


def _server_init_patched(self: Server, *args: Any, **kwargs: Any) -> None:
    # `--access-log -` (stdout) becomes the logger; a named file keeps daphne's own writer.
    action_logger = kwargs.get("action_logger")
    if isinstance(action_logger, AccessLogGenerator) and action_logger.stream is sys.stdout:
        kwargs["action_logger"] = LoggingAccessLog()
    # Every command that builds daphne's Server (daphne, runserver, symphainy.serve)
    # passes its endpoints here.
    if "endpoints" in kwargs:
        kwargs["endpoints"] = with_listen_backlog(kwargs["endpoints"])
    elif len(args) >= 2:
        args = (args[0], with_listen_backlog(args[1]), *args[2:])
    _server_init(self, *args, **kwargs)


def _redacting_log_action(self: Server, protocol: str, action: str, details: dict[str, Any]) -> None:
    if isinstance(details.get("path"), str):
        details = {**details, "path": redact(details["path"])}
    _server_log_action(self, protocol, action, details)


def _create_application_patched(self: Server, protocol: Any, scope: dict[str, Any]) -> Any:
    # A socket's application may wait for its send buffer to drain (SEND_BUFFER_EXTENSION).
    if isinstance(protocol, SymphainyWebSocketProtocol):
        scope["extensions"] = {**(scope.get("extensions") or {}), SEND_BUFFER_EXTENSION: {"drained": protocol.send_drained}}
    # The request id chosen here, where daphne's access lines can see it: the application
    # keeps a sane X-Request-ID (core.middleware, realtime.app), so both use this one.
    if scope.get("type") in ("http", "websocket"):
        from core.middleware import request_id_from

        headers = [(bytes(name), bytes(value)) for name, value in scope.get("headers") or []]
        incoming = next((value for name, value in headers if name.lower() == b"x-request-id"), b"")
        protocol.access_request_id = request_id_from(incoming.decode("latin-1"))
        scope["headers"] = [(n, v) for n, v in headers if n.lower() != b"x-request-id"] + [
            (b"x-request-id", protocol.access_request_id.encode("ascii"))]
    queue = _server_create_application(self, protocol, scope)
    note_application(self, protocol)  # reaped when its application ends (symphainy.reaper)
    return queue


# --- The drain on SIGTERM / SIGINT (realtime.drain owns its order) -----------------------
_server_kill_all = Server.kill_all_applications
_server_listen_success = Server.listen_success
_server_run = Server.run


def _listen_success_kept(self: Server, port: Any) -> None:
    self.__dict__.setdefault("symphainy_ports", []).append(port)
    _server_listen_success(self, port)


def _run_started(self: Server) -> None:
    from twisted.internet import reactor

    from core.conf import runtime_settings
    from realtime.drain import process_started
    from symphainy.stopping import exit_guard_start

    reactor.callWhenRunning(lambda: asyncio.ensure_future(process_started()))
    # From the signal on, the process exits by SHUTDOWN_TIMEOUT whatever its loop is doing.
    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: exit_guard_start(runtime_settings.SHUTDOWN_TIMEOUT.total_seconds())
    )
    _server_run(self)


def _in_flight(server: Server) -> int:
    return sum(
        1 for details in list(server.connections.values())
        if details.get("application_instance") is not None and not details["application_instance"].done()
    )


async def _stop_listening(server: Server) -> None:
    ports = server.__dict__.get("symphainy_ports", [])
    await asyncio.gather(*(Deferred.asFuture(maybeDeferred(port.stopListening), asyncio.get_running_loop()) for port in ports))


def _drain_then_kill(self: Server) -> Deferred:
    """Daphne's shutdown trigger (the reactor runs it on SIGTERM and SIGINT, before it
    stops): the drain first, then daphne's own kill of what is left; the process exits by
    SHUTDOWN_TIMEOUT whatever happens (`symphainy.stopping`, started in `_run_started`)."""
    from realtime.drain import drain
    from symphainy.stopping import sockets_cut

    async def drain_then_kill() -> None:
        try:
            await drain(stop_accepting=lambda: _stop_listening(self), in_flight=lambda: _in_flight(self),
                        cut=lambda: sockets_cut(self.connections))
        except Exception:  # noqa: BLE001 - a failed drain must not keep the process from stopping
            logger.exception("the drain failed")
        await Deferred.asFuture(_server_kill_all(self), asyncio.get_running_loop())

    # In a context of its own: Twisted's signal handler runs between any two bytecodes, so
    # the shutdown can inherit the context of whatever task the signal interrupted, such as a
    # handshake inside a thread-sensitive database call, where asgiref refuses every further
    # one ("Single thread executor already being used, would deadlock"): the drain failed.
    loop = asyncio.get_event_loop()
    return Deferred.fromFuture(loop.create_task(drain_then_kill(), context=contextvars.Context()))


def _skip_pformat(value: object) -> str:
    return "<protocol options>"


def daphne_protections_install() -> None:
    """Patch daphne's classes (idempotent). Daphne's command line and its runserver both
    build `daphne.server.Server` and `WebSocketFactory` themselves, with no hook to pass
    subclasses, so the classes are changed in place before the server starts."""
    WebSocketFactory.protocol = SymphainyWebSocketProtocol
    # HTTPFactory.buildProtocol looks the request class up in its module on each connection.
    http_protocol.WebRequest = BoundedWebRequest  # type: ignore[misc]
    # Every access-log line goes through Server.log_action, whichever logger is attached
    # (the command line's AccessLogGenerator, runserver's own `log_action`).
    Server.log_action = _redacting_log_action  # type: ignore[method-assign]
    Server.__init__ = _server_init_patched  # type: ignore[method-assign]
    Server.create_application = _create_application_patched  # type: ignore[method-assign]
    # SIGTERM and SIGINT drain (realtime.drain) before daphne cancels what is left; the
    # listeners are kept to stop listening; the lease is taken as the server starts.
    Server.kill_all_applications = _drain_then_kill  # type: ignore[method-assign]
    Server.listen_success = _listen_success_kept  # type: ignore[method-assign]
    Server.run = _run_started  # type: ignore[method-assign]
    # Autobahn pretty-prints its whole protocol configuration for a debug log line on
    # every new socket, whether or not debug logging is on: 7 % of a busy process's CPU
    # in a profile of handshakes. The line is not needed; the formatting is skipped.
    autobahn_protocol.pformat = _skip_pformat
    # Daphne's once-a-second walk of every connection, narrowed to those that need it.
    reaper_install()
    # Writes sent at once when nothing is buffered, not on the loop's next turn.
    direct_writes_install()


def daphne_protections_installed() -> bool:
    return (
        WebSocketFactory.protocol is SymphainyWebSocketProtocol
        and Server.log_action is _redacting_log_action
        and http_protocol.WebRequest is BoundedWebRequest
        and Server.create_application is _create_application_patched
        and Server.kill_all_applications is _drain_then_kill
        and reaper_installed()
        and direct_writes_installed()
    )


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "symphainy.settings")
    daphne_protections_install()
    args = list(sys.argv[1:] if argv is None else argv)
    if not any(re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", a) for a in args):
        args.append(APPLICATION)
    CommandLineInterface().run(args)


if __name__ == "__main__":
    # As the module `symphainy.serve`, not as `__main__`: `symphainy.asgi` imports this module,
    # and a second copy would patch daphne again over this one's patches, each wrapping the
    # other (the listeners kept twice, so a drain stopped each of them twice and failed).
    from symphainy.serve import main as serve_main

    serve_main()
