"""Prometheus metrics (prometheus-client).

Each process counts its own. With `PROMETHEUS_MULTIPROC_DIR` set (the deploy layout sets
it for every gunicorn worker and daphne process of a machine), prometheus-client keeps
the values in files there and /metrics reports the sum over all those processes, so a
scrape through any one of them sees the machine. `/metrics` answers only clients in
METRICS_ALLOWED_NETWORKS, or a request with `Authorization: Bearer <METRICS_TOKEN>`.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from typing import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from core.conf import runtime_settings

OPEN_SOCKETS = Gauge(
    "symphainy_open_sockets", "WebSockets open (summed over live processes).", multiprocess_mode="livesum"
)
HANDSHAKES = Counter(
    "symphainy_handshakes_total", "Socket handshakes by outcome: 'accepted' or the refusal close code.", ["outcome"]
)
SOCKET_CLOSES = Counter("symphainy_socket_closes_total", "Sockets closed, by close code.", ["code"])
SOCKET_REFUSALS = Counter(
    "symphainy_socket_refusals_total",
    "Sockets refused or cut off by a limit: origin (HTTP 403), cap (too many sockets), rate (message flood).",
    ["reason"],
)
LOGINS = Counter("symphainy_logins_total", "Login attempts by outcome.", ["outcome"])
SESSION_ENDS = Counter("symphainy_session_ends_total", "Runtime sessions ended, by reason.", ["reason"])
EXECUTION_DURATION = Histogram(
    "symphainy_execution_duration_seconds",
    "Execution run time from start to final status.",
    ["intent_type", "status"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)
HTTP_REQUESTS = Counter(
    "symphainy_http_requests_total", "HTTP requests by view name, method and status class.", ["view", "method", "status"]
)
HTTP_LATENCY = Histogram(
    "symphainy_http_request_duration_seconds",
    "HTTP request time inside Django, by view name and status class.",
    ["view", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EVENT_TAIL_READS = Counter("symphainy_event_tail_reads_total", "Reads of the session event log by the tails.")
EVENT_TAIL_DELIVERED = Counter(
    "symphainy_event_tail_deliveries_total", "Session events handed to sockets (one per event and socket)."
)
EVENT_TAIL_LAG = Histogram(
    "symphainy_event_tail_lag_seconds",
    "From an event's commit-time stamp to its tail's read of it.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
REVOCATION_LATENCY = Histogram(
    "symphainy_revocation_seconds",
    "From a session's end being recorded to a socket of it being closed, per socket.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 30),
)
EVENT_LOG_ROWS = Gauge(
    "symphainy_event_log_rows", "Rows in the session event log, as of the last prune.", multiprocess_mode="max"
)
EVENT_LOG_PRUNED = Counter("symphainy_event_log_pruned_total", "Session events deleted by pruning.")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetricsMiddleware:
    """Counts and times every HTTP request. Labels stay bounded: the URL pattern's name
    (never the path), the method (others as 'other') and the status class."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        view = (match.view_name or match._func_path) if match is not None else "unresolved"
        status = f"{response.status_code // 100}xx"
        method = request.method if request.method in _METHODS else "other"
        HTTP_REQUESTS.labels(view=view, method=method, status=status).inc()
        HTTP_LATENCY.labels(view=view, status=status).observe(time.perf_counter() - started)
        return response


def _registry() -> CollectorRegistry:
    if not getattr(settings, "PROMETHEUS_MULTIPROC_DIR", None):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def metrics_allowed(request: HttpRequest) -> bool:
    """The METRICS_TOKEN bearer, or a client address in METRICS_ALLOWED_NETWORKS."""
    # Imported here: core.http imports DRF, whose import loads the authentication
    # classes, whose modules import the counters above.
    from core.drf import client_address

    token = runtime_settings.METRICS_TOKEN
    if token:
        sent = request.headers.get("Authorization", "")
        if hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            return True
    address = client_address(request)
    if address is None:
        return False
    ip = ipaddress.ip_address(address)
    return any(ip in ipaddress.ip_network(network, strict=False) for network in runtime_settings.METRICS_ALLOWED_NETWORKS)


def metrics_view(request: HttpRequest) -> HttpResponse:
    if not metrics_allowed(request):
        from core.http import handler403

        return handler403(request)
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)
