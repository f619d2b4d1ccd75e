"""gunicorn's configuration for the HTTP half of the layout: `gunicorn -c deploy/gunicorn.conf.py`.

Sync workers, one per core (GUNICORN_WORKERS to change), bound to loopback behind nginx.
Its error and access lines go through the project's LOGGING (the same handler, format —
LOG_FORMAT=json — and token redaction as Django's own lines).
"""

from __future__ import annotations

import importlib
import os

wsgi_app = "symphainy.wsgi:application"
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS") or os.cpu_count() or 1)
worker_class = "sync"
# Longer than the slowest request (a login waits for Argon2; throttled requests are quick).
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 20
# nginx keeps connections to the workers open (its upstream keepalive).
keepalive = 5
# gunicorn's runtime control socket is not used here (systemd and signals manage the
# workers), and a second gunicorn on the machine would contend for its one default path.
control_socket_disable = True
accesslog = "-"
# The combined format, plus the request id the service returned and the time taken.
access_log_format = '%(h)s - - %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" request_id=%({x-request-id}o)s %(M)sms'

_settings = importlib.import_module(os.environ.get("DJANGO_SETTINGS_MODULE", "symphainy.settings"))
logconfig_dict = _settings.LOGGING


def child_exit(server, worker) -> None:  # noqa: ANN001 - gunicorn's hook signature
    """A worker's live gauges (open sockets: none here) leave the machine's sum."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
