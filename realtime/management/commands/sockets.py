"""`manage.py sockets disconnect ID [ID ...]`: close live sockets one by one, by their
connection id (`sessions show` lists them), through `realtime.disconnects.socket_disconnect`,
with the actor `command` in the audit trail."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from core.caller import Caller
from core.commands import common_options
from core.exceptions import CloseCode
from realtime.disconnects import socket_disconnect
from realtime.models import Connection


def _connection_id(raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        value = 0
    if value < 1:
        raise CommandError(f"'{raw}' is not a connection id (expected a whole number; `sessions show` lists them).")
    return value


class Command(BaseCommand):
    help = (
        "Live sockets: disconnect one by its connection id (`sessions show ID` lists a session's). It closes "
        f"with {int(CloseCode.DISCONNECTED)} on whichever process holds it; its session stays valid."
    )

    def add_arguments(self, parser: Any) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{disconnect}")
        disconnect = actions.add_parser(
            "disconnect",
            help="Close live sockets by connection id.",
            description=f"Close live sockets by connection id, with {int(CloseCode.DISCONNECTED)}, on whichever "
            "server process holds each. The session stays valid, so a client reconnects and resumes; to keep it "
            "out, end the session (`sessions end`). If one of the ids is unknown or malformed, nothing is done.",
        )
        disconnect.add_argument("connection_ids", nargs="+", metavar="ID", help="Connection ids (whole numbers).")
        common_options(parser, actions)

    def handle(self, *args: Any, **options: Any) -> None:
        ids = list(dict.fromkeys(_connection_id(raw) for raw in options["connection_ids"]))
        known = set(Connection.objects.filter(pk__in=ids).values_list("pk", flat=True))
        missing = [str(i) for i in ids if i not in known]
        if missing:
            raise CommandError(f"No live socket with connection id {', '.join(missing)}; nothing was disconnected.")
        actor = Caller.command()
        for connection_id in ids:
            connection = socket_disconnect(connection_id=connection_id, caller=actor)
            if connection is None:
                self.stdout.write(f"Socket {connection_id} had already closed.")
                continue
            self.stdout.write(
                f"Disconnecting socket {connection_id} (session {connection.session_id}, on "
                f"{connection.server_instance}, from {connection.client_address or '-'}): it closes with "
                f"{int(CloseCode.DISCONNECTED)}."
            )
