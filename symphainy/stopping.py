"""What a stopping daphne process does past what `realtime.drain` can ask of its sockets:
cut the ones still open when the drain's closes are over, and exit by SHUTDOWN_TIMEOUT
whatever its event loop is doing. `symphainy.serve` wires both into daphne's shutdown."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from autobahn.websocket.protocol import WebSocketProtocol

from core.exceptions import CloseCode

logger = logging.getLogger(__name__)
# Left of SHUTDOWN_TIMEOUT when the guard ends the process itself: the kill that follows the
# timeout (systemd's TimeoutStopSec, Kubernetes' grace) must find it gone.
EXIT_MARGIN_S = 0.5


def sockets_cut(connections: dict[Any, dict[str, Any]]) -> int:
    """End every socket still open at the transport, each for one write and one close, with
    no frame through the application: a socket whose close never started gets its 1012 frame
    written directly, then, like one whose peer has not answered its close, a FIN after what
    was written (the peer reads 1012, then the end of the stream); a peer that stopped
    reading (its send buffer over the high-water mark) would never take that FIN, and is
    reset (it sees 1006). Returns how many were cut."""
    cut = 0
    for protocol, details in list(connections.items()):
        transport = getattr(protocol, "transport", None)
        if details.get("disconnected") or not isinstance(protocol, WebSocketProtocol) or transport is None:
            continue
        if protocol.state == protocol.STATE_CLOSED:
            continue
        guard = getattr(protocol, "_send_guard", None)
        if guard is not None and guard.paused:
            transport.abortConnection()
        else:
            if protocol.state == protocol.STATE_OPEN:
                protocol.sendCloseFrame(code=int(CloseCode.SERVICE_RESTART), isReply=False)
            transport.loseConnection()
        cut += 1
    return cut


def exit_guard_start(timeout: float) -> threading.Timer:
    """From the signal on, a thread that ends the process with status 0 if it is still
    running EXIT_MARGIN_S before `timeout`: a loop too busy to finish the drain in time
    (thousands of sockets on a saturated machine) must not meet the hard kill. The drain
    removed the connection records first; what it could not hand over, the other processes
    take as from a crash, once the lease is stale (docs/deployment.md)."""
    guard = threading.Timer(max(0.0, timeout - EXIT_MARGIN_S), _exit_now, args=(timeout,))
    guard.daemon = True
    guard.start()
    return guard


def _exit_now(timeout: float) -> None:
    logger.error("still stopping %.1f s after the signal (SHUTDOWN_TIMEOUT %.1f s): exiting now",
                 timeout - EXIT_MARGIN_S, timeout)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(0)
