from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularSwaggerView

from accounts.admin import admin_login
from core.http import favicon
from core.metrics import metrics_view
from realtime.asyncapi import asyncapi_view
from symphainy.health import LivenessApi, ReadinessApi

urlpatterns = [
    path("api/auth/", include("accounts.urls")),
    path("api/", include("sessions_runtime.urls")),
    # Also dispatched by symphainy.health.ProbeMiddleware, before Host validation.
    # /health keeps the contract's dependency check (as /ready); /live is the liveness
    # probe, which asks no dependency, so a Redis blip restarts nothing.
    path("live", LivenessApi.as_view(), name="live"),
    path("health", ReadinessApi.as_view(), name="health"),
    path("ready", ReadinessApi.as_view(), name="ready"),
    path("metrics", metrics_view, name="metrics"),
    path("openapi.json", SpectacularJSONAPIView.as_view(), name="openapi"),
    # The socket's own schema (AsyncAPI 3.0), beside the HTTP API's: docs/protocol.md.
    path("asyncapi.json", asyncapi_view, name="asyncapi"),
    path("docs", SpectacularSwaggerView.as_view(url_name="openapi"), name="docs"),
    # The admin's login page, throttled and audited (accounts.admin.admin_login).
    path("admin/login/", admin_login, name="admin_login"),
    path("admin/", admin.site.urls),
    path("favicon.ico", favicon, name="favicon"),
    path("", include("console.urls")),
]

handler400 = "core.http.handler400"
handler403 = "core.http.handler403"
handler404 = "core.http.handler404"
handler500 = "core.http.handler500"
