from django.apps import AppConfig


class SessionsRuntimeConfig(AppConfig):
    name = "sessions_runtime"
    verbose_name = "Runtime sessions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from sessions_runtime import checks  # noqa: F401  (registers the system checks)
