"""Run the service under daphne with credential-free access logs.

`python -m symphainy.serve [daphne options]` is daphne's own command line with three
changes: the application defaults to `symphainy.asgi:application`; every path that
reaches the access log has its token query parameters redacted (the legacy socket
transport carries `?access_token=`); and the close codes 1009, 1011 and 1013 reach the
client, as do the protocol-violation codes 1002 and 1007 (see
`SymphainyWebSocketProtocol`). Daphne's WebSocket ping keeps idle sockets honest:
`--ping-interval` (default 20 s) and `--ping-timeout` (default 30 s) drop peers that stop
answering.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from daphne.cli import CommandLineInterface
from daphne.server import Server
from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol

from symphainy.logs import redact

APPLICATION = "symphainy.asgi:application"


# Close codes RFC 6455 registers for endpoints (message too big, internal error, try again
# later). Autobahn's `sendClose` only lets an application send 1000 and 3000-4999 and
# raises on the rest, which would leave such a socket open; these go out as close frames
# directly.
ENDPOINT_CLOSE_CODES = frozenset({1009, 1011, 1013})


class SymphainyWebSocketProtocol(WebSocketProtocol):
    def _connectionMade(self) -> None:
        super()._connectionMade()
        # Autobahn drops the TCP connection on a protocol violation (invalid UTF-8, a bad
        # frame) unless told otherwise; a close frame with the code (1007, 1002) tells
        # the client why.
        self.failByDrop = False

    def serverClose(self, code: int | None = None) -> None:
        if code in ENDPOINT_CLOSE_CODES:
            self.sendCloseFrame(code=code, isReply=False)
        else:
            super().serverClose(code=code)


class RedactingServer(Server):
    def log_action(self, protocol: str, action: str, details: dict[str, Any]) -> None:
        if isinstance(details.get("path"), str):
            details = {**details, "path": redact(details["path"])}
        super().log_action(protocol, action, details)


class RedactingCommandLineInterface(CommandLineInterface):
    server_class = RedactingServer


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "symphainy.settings")
    WebSocketFactory.protocol = SymphainyWebSocketProtocol
    args = list(sys.argv[1:] if argv is None else argv)
    if not any(re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", a) for a in args):
        args.append(APPLICATION)
    RedactingCommandLineInterface().run(args)


if __name__ == "__main__":
    main()
