"""Daphne's application checker, looking only at the connections that need it.

Daphne reaps finished applications and closed connections in `Server.application_checker`,
which runs every second and walks every connection the server holds. At 10,000 open
sockets that walk took 9 % of a daphne process's event loop in a profile of a rolling
restart (bench/restart.py, the process taking 5,000 reconnects) and goes on costing about
as much for idle sockets. A connection needs the checker only once its application has
finished or its peer has gone, and daphne tells us both: `protocol_disconnected` and the
application's future. So those connections are noted as they happen, and each pass runs
daphne's own checker over them alone (its rules — the close timeout, the exception log,
the reaping — are kept, not copied). A connection whose peer has gone stays noted until
it is reaped; one whose application finished while its peer stays is looked at once, and
again when its peer goes.
"""

from __future__ import annotations

from typing import Any

from daphne.server import Server

_application_checker = Server.application_checker
_protocol_disconnected = Server.protocol_disconnected
WATCHED = "symphainy_reap"  # the server's attribute: the connections the checker looks at


def _watched(server: Server) -> set[Any]:
    return server.__dict__.setdefault(WATCHED, set())


def note_application(server: Server, protocol: Any) -> None:
    """After `create_application`: the checker looks at the connection once its application ends."""
    details = server.connections.get(protocol) or {}
    instance = details.get("application_instance")
    if instance is not None:
        instance.add_done_callback(lambda _: _watched(server).add(protocol))


def _protocol_disconnected_noted(self: Server, protocol: Any) -> None:
    _protocol_disconnected(self, protocol)
    _watched(self).add(protocol)


def _application_checker_noted(self: Server) -> None:
    everything, watched = self.connections, _watched(self)
    noted = {protocol: everything[protocol] for protocol in watched if protocol in everything}
    before = list(noted)
    self.connections = noted  # daphne's pass walks these alone, and deletes what it reaps
    try:
        _application_checker(self)  # it schedules the next pass itself
    finally:
        self.connections = everything
    for protocol in before:
        if protocol not in noted:
            everything.pop(protocol, None)
    # Kept: the connections whose peer has gone and that are not reaped yet (an application
    # slow to close is cancelled after daphne's close timeout); the rest come back when noted.
    still = {protocol for protocol in watched if protocol in everything and "disconnected" in everything[protocol]}
    watched.intersection_update(still)


def reaper_install() -> None:
    """Patch daphne's Server (idempotent; `symphainy.serve.daphne_protections_install`)."""
    Server.protocol_disconnected = _protocol_disconnected_noted  # type: ignore[method-assign]
    Server.application_checker = _application_checker_noted  # type: ignore[method-assign]


def reaper_installed() -> bool:
    return Server.application_checker is _application_checker_noted
