from django.apps import AppConfig


class SessionsRuntimeConfig(AppConfig):
    name = "sessions_runtime"
    verbose_name = "Runtime sessions"
    default_auto_field = "django.db.models.BigAutoField"
