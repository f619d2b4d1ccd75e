"""What an open socket leaves behind on the server: daphne's upgrade hands the TCP
connection from Twisted's HTTP channel to a WebSocket protocol, and the HTTP channel and
its request must not outlive that (as a reference cycle, they would stay until a full
pass of the garbage collector, and every pass would scan them for every socket). Also
the listeners' backlog, which decides how many connections wait for the server at once."""

from __future__ import annotations

import gc
import weakref
from types import SimpleNamespace

import pytest
from daphne import http_protocol
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from symphainy.serve import BoundedWebRequest, daphne_protections_install


class _WebSocketProtocol:
    """Stands in for the WebSocket protocol daphne builds: records what it is handed."""

    def __init__(self) -> None:
        self.received = b""
        self.transport = None

    def makeConnection(self, transport) -> None:  # noqa: N802 - Twisted's name
        # As SymphainyWebSocketProtocol does: the HTTP channel stops being the producer.
        self.transport = transport
        transport.unregisterProducer()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        self.received += data


def _server(built: list[_WebSocketProtocol]) -> SimpleNamespace:
    def build(addr):
        protocol = _WebSocketProtocol()
        built.append(protocol)
        return protocol

    return SimpleNamespace(
        ws_factory=SimpleNamespace(buildProtocol=build),
        protocol_connected=lambda protocol: None,
        protocol_disconnected=lambda protocol: None,
        proxy_forwarded_address_header=None,
        root_path="",
    )


def _connect(built: list[_WebSocketProtocol]):
    daphne_protections_install()
    factory = http_protocol.HTTPFactory(_server(built))
    channel = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 50000),
                                hostAddress=IPv4Address("TCP", "127.0.0.1", 8000))
    channel.makeConnection(transport)
    # Twisted wraps the HTTP/1.1 channel in a protocol that could also speak HTTP/2.
    return channel, channel._channel, transport


UPGRADE = (b"GET /api/runtime/agent HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")


@pytest.fixture
def no_collector():
    """Only reference counting frees anything while the test runs."""
    gc.collect()
    gc.disable()
    yield
    gc.enable()


def test_the_upgraded_http_channel_and_request_are_freed_at_once(no_collector, monkeypatch):
    built: list[_WebSocketProtocol] = []
    wrapper, channel, transport = _connect(built)
    assert channel.requestFactory is BoundedWebRequest
    requests = []
    original = BoundedWebRequest.process

    def spy(self):
        requests.append(weakref.ref(self))
        return original(self)

    monkeypatch.setattr(BoundedWebRequest, "process", spy)
    wrapper.dataReceived(UPGRADE)
    # The handshake went to the WebSocket protocol, the connection with it.
    assert len(built) == 1 and built[0].received.startswith(b"GET /api/runtime/agent HTTP/1.1")
    assert transport.protocol is built[0]
    assert channel.requests == []
    channel_ref = weakref.ref(channel)
    del channel, wrapper
    # Nothing but the cycle held them: without the garbage collector, both are gone.
    assert requests and requests[0]() is None
    assert channel_ref() is None


def test_a_plain_request_stays_with_its_channel(no_collector, monkeypatch):
    built: list[_WebSocketProtocol] = []
    wrapper, channel, _ = _connect(built)
    seen = []

    def process(self):  # an HTTP request is answered later: daphne's process is not run
        seen.append(self)

    monkeypatch.setattr(BoundedWebRequest.__mro__[1], "process", process)  # daphne's WebRequest
    wrapper.dataReceived(b"GET /api/auth/me HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert built == []
    assert channel.requests == seen and len(seen) == 1


def test_what_the_process_loaded_at_start_is_left_out_of_collector_passes():
    import symphainy.asgi  # noqa: F401 - the import freezes what is loaded by then

    # Django, the apps and the URL conf: well over 50,000 objects that every full pass
    # would otherwise scan, for as long as the process runs.
    assert gc.get_freeze_count() > 50_000


@pytest.mark.parametrize(("given", "expected"), [
    ("tcp:port=8000:interface=127.0.0.1", "tcp:port=8000:interface=127.0.0.1:backlog=2048"),
    (r"tcp:port=8000:interface=\:\:1", r"tcp:port=8000:interface=\:\:1:backlog=2048"),
    ("unix:/run/symphainy.sock", "unix:/run/symphainy.sock:backlog=2048"),
    ("tcp:port=8000:backlog=10", "tcp:port=8000:backlog=10"),  # the operator's own stays
    ("fd:fileno=3", "fd:fileno=3"),  # an adopted socket already listens
])
def test_endpoints_get_the_listen_backlog(given, expected):
    from symphainy.serve import with_listen_backlog

    assert with_listen_backlog([given]) == [expected]
