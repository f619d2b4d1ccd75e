"""gunicorn's configuration for the HTTP half of the layout: `gunicorn -c deploy/gunicorn.conf.py`.

Sync workers, one per core (GUNICORN_WORKERS to change), bound to loopback behind nginx.
Its error and access lines go through the project's LOGGING (the same handler, format —
LOG_FORMAT=json — and token redaction as Django's own lines).
"""

from __future__ import annotations

import importlib
import os
import traceback

from gunicorn import glogging

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
# The combined format, plus the request id the service returned and the time taken; with
# LOG_FORMAT=json each field is a key of its own too (AccessLogger).
access_log_format = '%(h)s - - %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" request_id=%({x-request-id}o)s %(M)sms'

_settings = importlib.import_module(os.environ.get("DJANGO_SETTINGS_MODULE", "symphainy.settings"))
logconfig_dict = _settings.LOGGING


class AccessLogger(glogging.Logger):
    """gunicorn's access line with method, path (no query string), status, duration, bytes,
    the client's address as the service sees it (TRUSTED_PROXY_COUNT) and the request id
    the service answered with as keys (core.logs.access_line), like daphne's."""

    def access(self, resp, req, environ, request_time) -> None:  # noqa: ANN001 - gunicorn's signature
        if not self.access_log_enabled:
            return
        try:
            from types import SimpleNamespace

            from django.http.request import HttpHeaders

            from core.drf import client_address
            from core.logs import access_line

            atoms = self.atoms_wrapper_class(self.atoms(resp, req, environ, request_time))
            request_id = next((value for name, value in resp.headers if name.lower() == "x-request-id"), None)
            access_line(
                self.access_log, self.cfg.access_log_format, atoms, method=environ.get("REQUEST_METHOD", "-"),
                path=environ.get("RAW_URI") or environ.get("PATH_INFO", ""), status=int(str(resp.status).split(None, 1)[0]),
                duration_s=request_time.total_seconds(), size=getattr(resp, "sent", None),
                client=client_address(SimpleNamespace(META=environ, headers=HttpHeaders(environ))), request_id=request_id,
            )
        except Exception:
            self.error(traceback.format_exc())


logger_class = AccessLogger


def child_exit(server, worker) -> None:  # noqa: ANN001 - gunicorn's hook signature
    """A worker's live gauges (open sockets: none here) leave the machine's sum."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
