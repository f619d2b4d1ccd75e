"""Daphne's writes are sent at once when nothing is buffered (symphainy/writes.py), and take
Twisted's buffered path otherwise, in order: the kernel's buffer full, data already
waiting, TLS, a closing connection, a failing socket."""

from __future__ import annotations

import socket

import pytest

from symphainy import writes


class Connection:
    """The parts of `twisted.internet.tcp.Server` a write looks at."""

    connected = 1
    SEND_LIMIT = 128 * 1024
    disconnecting = False
    TLS = False
    _writeDisconnected = False

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock
        self._tempDataBuffer: list[bytes] = []
        self.dataBuffer = b""
        self.offset = 0


@pytest.fixture
def pair(monkeypatch):
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    buffered: list[bytes] = []
    monkeypatch.setattr(writes, "_write", lambda connection, data: buffered.append(data))
    yield Connection(a), b, buffered
    a.close()
    b.close()


def _received(peer: socket.socket) -> bytes:
    out = b""
    while True:
        try:
            chunk = peer.recv(1 << 20)
        except BlockingIOError:
            return out
        if not chunk:
            return out
        out += chunk


def test_a_write_with_nothing_buffered_is_sent_at_once(pair):
    connection, peer, buffered = pair
    writes.direct_write(connection, b"frame one")
    writes.direct_write(connection, b"frame two")
    assert _received(peer) == b"frame oneframe two" and buffered == []


def test_what_the_kernel_does_not_take_is_buffered_in_order(pair):
    connection, peer, buffered = pair
    data = bytes(range(256)) * 40_000  # ~10 MB: more than a socket pair's buffers
    writes.direct_write(connection, data)
    assert len(buffered) == 1 and 0 < len(buffered[0]) < len(data)
    assert _received(peer) + buffered[0] == data


def test_at_most_twisteds_send_limit_goes_at_once_the_rest_in_order(pair):
    """A big frame (a replay's) does not hold the loop for the whole copy."""
    connection, peer, buffered = pair
    connection.SEND_LIMIT = 1000
    data = bytes(range(256)) * 20
    writes.direct_write(connection, data)
    received = _received(peer)
    assert len(received) == 1000 and received + buffered[0] == data


@pytest.mark.parametrize("state", ["waiting", "tls", "disconnecting", "write_closed"])
def test_data_already_waiting_tls_or_a_closing_connection_take_twisteds_path(pair, state):
    connection, peer, buffered = pair
    if state == "waiting":
        connection._tempDataBuffer = [b"earlier"]
    elif state == "tls":
        connection.TLS = True
    elif state == "disconnecting":
        connection.disconnecting = True
    else:
        connection._writeDisconnected = True
    writes.direct_write(connection, b"later")
    assert buffered == [b"later"] and _received(peer) == b""


def test_a_failing_send_leaves_the_data_to_twisted_which_finds_the_error(pair):
    connection, peer, buffered = pair
    peer.close()
    writes.direct_write(connection, b"to nobody")
    assert buffered == [b"to nobody"]
