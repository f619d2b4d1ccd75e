"""System checks for the settings that name this app's code: the state backend, the
execution runner, and the intent and agent handlers (a dotted path that does not import
stops `check` and start-up, `core.checks.startup_checks_enforce`, rather than failing every
execution)."""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, register
from django.utils.module_loading import import_string

from core.checks import HINT, SETTINGS_TAG
from core.conf import runtime_settings
from sessions_runtime.runner import EXECUTION_RUNNERS
from sessions_runtime.state import _BACKENDS


def _import_problem(path: object) -> str | None:
    """Why `path` is not an importable callable, or None when it is."""
    if not isinstance(path, str) or "." not in path:
        return f"{path!r} is not a dotted path"
    try:
        target = import_string(path)
    except ImportError as error:
        return f"{path!r} does not import ({error})"
    return None if callable(target) else f"{path!r} is not callable"


@register(SETTINGS_TAG)
def check_runtime_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """sessions_runtime.E001 unknown STATE_BACKEND; E002 unknown EXECUTION_RUNNER; E003 a bad
    INTENT_HANDLERS entry; E004 an AGENT_HANDLER that does not import."""
    errors: list[Error] = []
    backend = runtime_settings.STATE_BACKEND
    if backend not in _BACKENDS and (problem := _import_problem(backend)):
        errors.append(Error(
            f"SYMPHAINY['STATE_BACKEND'] must be one of {', '.join(_BACKENDS)} or a backend's dotted path; {problem}.",
            hint=HINT, id="sessions_runtime.E001",
        ))
    runner = runtime_settings.EXECUTION_RUNNER
    if runner not in EXECUTION_RUNNERS:
        errors.append(Error(
            f"SYMPHAINY['EXECUTION_RUNNER'] must be one of {', '.join(EXECUTION_RUNNERS)}, not {runner!r}.",
            hint=HINT, id="sessions_runtime.E002",
        ))
    handlers = runtime_settings.INTENT_HANDLERS
    if not isinstance(handlers, dict):
        errors.append(Error(
            f"SYMPHAINY['INTENT_HANDLERS'] must be a dict of intent type to dotted path, not {handlers!r}.",
            hint=HINT, id="sessions_runtime.E003",
        ))
    else:
        for intent_type, path in handlers.items():
            problem = "its intent type is empty" if not (isinstance(intent_type, str) and intent_type) else _import_problem(path)
            if problem:
                errors.append(Error(
                    f"SYMPHAINY['INTENT_HANDLERS'][{intent_type!r}]: {problem}.", hint=HINT, id="sessions_runtime.E003"
                ))
    if problem := _import_problem(runtime_settings.AGENT_HANDLER):
        errors.append(Error(f"SYMPHAINY['AGENT_HANDLER']: {problem}.", hint=HINT, id="sessions_runtime.E004"))
    return errors
