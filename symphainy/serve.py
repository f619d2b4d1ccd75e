"""Run the service under daphne with credential-free access logs.

`python -m symphainy.serve [daphne options]` is daphne's own command line with two
changes: the application defaults to `symphainy.asgi:application`, and every path that
reaches the access log has its token query parameters redacted (the legacy socket
transport carries `?access_token=`). Daphne's WebSocket ping keeps idle sockets honest:
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

from symphainy.logs import redact

APPLICATION = "symphainy.asgi:application"


class RedactingServer(Server):
    def log_action(self, protocol: str, action: str, details: dict[str, Any]) -> None:
        if isinstance(details.get("path"), str):
            details = {**details, "path": redact(details["path"])}
        super().log_action(protocol, action, details)


class RedactingCommandLineInterface(CommandLineInterface):
    server_class = RedactingServer


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "symphainy.settings")
    args = list(sys.argv[1:] if argv is None else argv)
    if not any(re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", a) for a in args):
        args.append(APPLICATION)
    RedactingCommandLineInterface().run(args)


if __name__ == "__main__":
    main()
