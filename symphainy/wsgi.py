"""WSGI entry point, served by gunicorn: the HTTP half of the production layout
(`deploy/`). Sockets are served by daphne through `symphainy.asgi`."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "symphainy.settings")
application = get_wsgi_application()

from core.checks import startup_checks_enforce  # noqa: E402

startup_checks_enforce()  # gunicorn refuses an insecure key or a bad setting, as daphne does
