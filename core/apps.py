from django.apps import AppConfig


class CoreConfig(AppConfig):
    """The ground floor every app stands on; it imports no other app of the project."""

    name = "core"
    verbose_name = "Core"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from core import checks  # noqa: F401 - registers the start-up security checks
