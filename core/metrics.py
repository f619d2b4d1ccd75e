"""Prometheus metrics (prometheus-client). Each serving process exposes its own at
/metrics; scrape every process (they are labelled by the scrape target)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

OPEN_SOCKETS = Gauge("symphainy_open_sockets", "WebSockets open on this process.")
HANDSHAKES = Counter(
    "symphainy_handshakes_total", "Socket handshakes by outcome: 'accepted' or the refusal close code.", ["outcome"]
)
LOGINS = Counter("symphainy_logins_total", "Login attempts by outcome.", ["outcome"])
SESSION_ENDS = Counter("symphainy_session_ends_total", "Runtime sessions ended, by reason.", ["reason"])
EXECUTION_DURATION = Histogram(
    "symphainy_execution_duration_seconds",
    "Execution run time from start to final status.",
    ["intent_type", "status"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)


def metrics_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
