from django.urls import path

from sessions_runtime import apis

urlpatterns = [
    path("session/create", apis.SessionCreateApi.as_view(), name="session-create"),
    path("session/<str:session_id>", apis.SessionDetailApi.as_view(), name="session-detail"),
    path("session/<str:session_id>/state", apis.SessionStateApi.as_view(), name="session-state"),
    path("session/<str:session_id>/conversations", apis.SessionConversationsApi.as_view(), name="session-conversations"),
    path("session/<str:session_id>/conversations/<str:conversation_id>", apis.SessionConversationApi.as_view(),
         name="session-conversation"),
    path("session/<str:session_id>/files", apis.SessionFilesApi.as_view(), name="session-files"),
    path("session/<str:session_id>/files/<str:file_id>", apis.SessionFileDetailApi.as_view(), name="session-file"),
    path("sessions", apis.SessionListApi.as_view(), name="session-list"),
    path("intent/submit", apis.IntentSubmitApi.as_view(), name="intent-submit"),
    path("execution/<str:execution_id>/status", apis.ExecutionStatusApi.as_view(), name="execution-status"),
    path("execution/<str:execution_id>/cancel", apis.ExecutionCancelApi.as_view(), name="execution-cancel"),
]
