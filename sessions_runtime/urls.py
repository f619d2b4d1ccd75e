from django.urls import path

from sessions_runtime import apis

urlpatterns = [
    path("session/create", apis.SessionCreateApi.as_view(), name="session-create"),
    path("session/<str:session_id>", apis.SessionDetailApi.as_view(), name="session-detail"),
    path("sessions", apis.SessionListApi.as_view(), name="session-list"),
]
