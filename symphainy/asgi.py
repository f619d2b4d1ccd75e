"""ASGI entry point, served by daphne: HTTP through Django; WebSockets through one layer
(origin, route, credentials: `realtime.app.RuntimeSocketApp`), then the
consumer; channel-layer messages for the execution worker.

Importing it refuses to start on an insecure configuration (`core.checks`) and installs
the daphne fixes of `symphainy.serve`, so they hold whichever command started daphne
(`daphne` itself, `manage.py runserver`, `python -m symphainy.serve`). Daphne is an
installed app, so its classes are loaded anyway; under another server they go unused.
"""

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "symphainy.settings")
django_asgi_app = get_asgi_application()

from core.checks import startup_checks_enforce  # noqa: E402
from symphainy.serve import daphne_protections_install  # noqa: E402

startup_checks_enforce()
daphne_protections_install()

from channels.routing import ChannelNameRouter, ProtocolTypeRouter  # noqa: E402

from realtime.app import websocket_application  # noqa: E402
from sessions_runtime.runner import WORKER_CHANNEL  # noqa: E402
from sessions_runtime.worker import ExecutionWorkerConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": websocket_application,
        # `manage.py runworker symphainy.executions` (EXECUTION_RUNNER=worker)
        "channel": ChannelNameRouter({WORKER_CHANNEL: ExecutionWorkerConsumer.as_asgi()}),
    }
)

# What is loaded by now (Django, the apps, the URL conf, the schema) lives as long as the
# process. Frozen, it is left out of the garbage collector's full passes: each pass stops
# every socket of the process for as long as it scans, so the less it scans, the shorter
# the pause (bench/run.py's idle-socket climb measures it). Garbage of the start-up is
# collected first, so freezing keeps nothing alive that would otherwise be freed.
gc.collect()
gc.freeze()
