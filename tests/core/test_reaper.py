"""Daphne's application checker looks only at the connections that need it
(symphainy/reaper.py): an idle open socket is never read by a pass, and what daphne's own
checker did — reap a finished application and a gone peer, cancel an application slow to
close, log an application's exception — still happens."""

from __future__ import annotations

import asyncio
import time

import pytest
from daphne.server import Server

from symphainy.serve import daphne_protections_install, daphne_protections_installed


class Idle(dict):
    """The details of an open socket whose application runs: a pass must not read them."""

    def get(self, *args, **kwargs):
        raise AssertionError("the checker walked an idle connection")

    def __contains__(self, key):
        raise AssertionError("the checker walked an idle connection")


class Protocol:
    def __init__(self) -> None:
        self.exceptions: list[BaseException] = []

    def handle_exception(self, exception: BaseException) -> None:
        self.exceptions.append(exception)


async def _server_with(count_idle: int) -> tuple[Server, list[Protocol]]:
    daphne_protections_install()
    assert daphne_protections_installed()
    server = Server(application=None, endpoints=["tcp:port=0:interface=127.0.0.1"], signal_handlers=False)
    server.connections = {}  # as `Server.run` starts it
    idle = [Protocol() for _ in range(count_idle)]
    for protocol in idle:
        server.connections[protocol] = Idle(connected=time.time(), application_instance=asyncio.Future())
    return server, idle


def _connect(server: Server, application: asyncio.Future) -> Protocol:
    """A connection with its application, as `create_application` leaves it."""
    from symphainy.reaper import note_application

    protocol = Protocol()
    server.protocol_connected(protocol)
    server.connections[protocol]["application_instance"] = application
    note_application(server, protocol)
    return protocol


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)  # the futures' done callbacks


async def test_a_pass_reads_no_idle_socket_and_reaps_a_finished_one_whose_peer_went():
    server, idle = await _server_with(1000)
    application = asyncio.Future()
    gone = _connect(server, application)
    application.set_result(None)
    server.protocol_disconnected(gone)
    await _settle()
    server.application_checker()
    assert gone not in server.connections
    assert all(protocol in server.connections for protocol in idle)
    server.application_checker()  # nothing left to look at; still reads no idle socket


async def test_an_application_that_ends_before_its_peer_goes_is_reaped_when_the_peer_goes():
    server, _ = await _server_with(10)
    application = asyncio.Future()
    protocol = _connect(server, application)
    application.set_result(None)
    await _settle()
    server.application_checker()
    assert protocol in server.connections and "application_instance" not in server.connections[protocol]
    server.protocol_disconnected(protocol)
    server.application_checker()
    assert protocol not in server.connections


async def test_an_application_slow_to_close_is_cancelled_after_the_close_timeout_and_errors_are_handed_on():
    server, _ = await _server_with(10)
    server.application_close_timeout = 0
    slow = asyncio.Future()
    protocol = _connect(server, slow)
    server.protocol_disconnected(protocol)
    time.sleep(0.01)
    server.application_checker()
    assert slow.cancelled()
    await _settle()
    server.application_checker()
    assert protocol not in server.connections

    failing = asyncio.Future()
    open_protocol = _connect(server, failing)
    failing.set_exception(ValueError("the application failed"))
    await _settle()
    server.application_checker()
    assert [str(e) for e in open_protocol.exceptions] == ["the application failed"]


@pytest.fixture(autouse=True)
def _no_reactor_calls(monkeypatch):
    """A pass schedules the next one on the reactor, which no test runs."""
    from twisted.internet import reactor

    monkeypatch.setattr(reactor, "callLater", lambda *args, **kwargs: None)
