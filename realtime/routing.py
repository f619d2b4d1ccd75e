from django.urls import path

from realtime.consumers import RuntimeAgentConsumer
from realtime.middleware import TokenAuthMiddleware

websocket_urlpatterns = [
    path("api/runtime/agent", TokenAuthMiddleware(RuntimeAgentConsumer.as_asgi())),
]
