"""Daphne's writes go out at once when nothing waits before them.

Twisted buffers every write and sends it when the reactor reports the socket writable: per
frame, a system call to watch the socket for writability, the wait for the next turn of the
loop, the send, and another call to stop watching (`FileDescriptor.write`, `doWrite`). On
the asyncio reactor daphne runs on, that was 23 % of the event loop of a process taking
5,000 reconnects in a rolling restart (py-spy, bench/restart.py at 10,000 sockets): each
handshake's reply, `session.ready` and every event sent. asyncio's own transports, like
most servers, try the send first and watch for writability only when the kernel's buffer
is full; `direct_write` does the same for daphne's connections: when the connection's
buffer is empty, the data is sent now, and only what the kernel does not take is buffered
(in order, behind nothing), and at most what Twisted sends in one go. An error on the send is left for Twisted's own path to find
(the data goes to its buffer, whose next send fails and closes the connection as before).
A TLS connection, or one closing, takes Twisted's path unchanged.
"""

from __future__ import annotations

from twisted.internet import tcp

_write = tcp.Server.write


def direct_write(self: tcp.Server, data: bytes) -> None:
    """`tcp.Server.write`, sending first when nothing is buffered (see the module)."""
    if (
        type(data) is bytes and data and self.connected and not self.disconnecting and not self.TLS
        and not self._writeDisconnected and not self._tempDataBuffer and self.offset >= len(self.dataBuffer)
    ):
        try:
            # At most SEND_LIMIT (128 KiB) at once, as Twisted's own sends: a multi-megabyte
            # frame (a big replay's) must not hold the loop for the whole copy.
            sent = self.socket.send(memoryview(data)[: self.SEND_LIMIT] if len(data) > self.SEND_LIMIT else data)
        except OSError:  # full (EAGAIN) or failing: Twisted's path sends or finds the error
            sent = 0
        if sent >= len(data):
            return
        data = data[sent:]
    _write(self, data)


def direct_writes_install() -> None:
    """Patch Twisted's accepted TCP connections (idempotent; `symphainy.serve`)."""
    tcp.Server.write = direct_write  # type: ignore[method-assign]


def direct_writes_installed() -> bool:
    return tcp.Server.write is direct_write
