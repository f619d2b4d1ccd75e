"""ASGI entry point, served by daphne: HTTP through Django; WebSockets through origin
validation, then the token middleware, then the consumer; channel-layer messages for the
execution worker."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "symphainy.settings")
django_asgi_app = get_asgi_application()

from core.checks import checks_enforce  # noqa: E402

checks_enforce()  # a bad setting (say WS_MESSAGE_RATE=lots) stops daphne here, as it stops `check`

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
