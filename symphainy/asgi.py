"""ASGI entry point, served by daphne: HTTP through Django; WebSockets through origin
validation, then the token middleware, then the consumer; channel-layer messages for the
execution worker.

Importing it refuses to start on an insecure configuration (`core.checks`) and installs
the daphne fixes of `symphainy.serve`, so they hold whichever command started daphne
(`daphne` itself, `manage.py runserver`, `python -m symphainy.serve`). Daphne is an
installed app, so its classes are loaded anyway; under another server they go unused.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "symphainy.settings")
django_asgi_app = get_asgi_application()

from core.checks import startup_checks_enforce  # noqa: E402
from symphainy.serve import daphne_protections_install  # noqa: E402

startup_checks_enforce()
daphne_protections_install()

from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter  # noqa: E402

from realtime.middleware import RuntimeOriginValidator  # noqa: E402
from realtime.routing import websocket_urlpatterns  # noqa: E402
from sessions_runtime.runner import WORKER_CHANNEL  # noqa: E402
from sessions_runtime.worker import ExecutionWorkerConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": RuntimeOriginValidator(URLRouter(websocket_urlpatterns)),
        # `manage.py runworker symphainy.executions` (EXECUTION_RUNNER=worker)
        "channel": ChannelNameRouter({WORKER_CHANNEL: ExecutionWorkerConsumer.as_asgi()}),
    }
)
