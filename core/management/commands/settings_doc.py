"""Write docs/configuration.md from the settings table of `core.conf`:
`python manage.py settings_doc > docs/configuration.md`. A test fails when the page and
the table disagree."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand

from core.conf import BYTES, MAPPING, PROJECT_VARIABLES, SECTIONS, Setting, Variable

REGENERATE = "python manage.py settings_doc > docs/configuration.md"

INTRO = f"""\
# Configuration

<!-- Generated from core/conf.py by `{REGENERATE}`; edit the table there, not this page. -->

Everything is read from the environment, in `symphainy/settings.py` only; an empty
variable counts as unset. Every variable has an embedded default that needs nothing
installed (SQLite, an in-memory channel layer, a local-memory cache); `DATABASE_URL` and
`REDIS_URL` switch to PostgreSQL and Redis.

The product's own settings are declared once, in the table of `core/conf.py`: a key, a
default, the environment variable that sets it, a unit, a check and what it does. Code
reads them through `core.conf.runtime_settings`; `settings.SYMPHAINY` holds only what the
environment sets, and a deployment's own settings module may set them there too, as
Python values (a `timedelta` for a duration: see [extending.md](extending.md)); a setting
without a variable ("settings only") can be set there alone.

A variable that does not read as its unit (a whole number, a flag, a network) stops the
settings from loading, naming the variable. Every product setting is then checked by
Django's system checks (`core/checks.py`, `sessions_runtime/checks.py`): a value that
breaks its check, or an unknown name in `SYMPHAINY` (`core.E004`), stops `manage.py check`
and the server's start-up (`symphainy/asgi.py` and `symphainy/wsgi.py` run the checks,
since daphne and gunicorn do not) with a message naming the setting and the check's id.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _human(setting: Setting) -> str:
    """' (24 h)' after a duration of two minutes or more, ' (1 MiB)' after a round size."""
    value = setting.default
    if isinstance(value, timedelta) and value >= timedelta(hours=1):
        hours = value / timedelta(hours=1)
        return f" ({hours / 24:g} days)" if hours >= 48 else f" ({hours:g} h)"
    if isinstance(value, timedelta) and value >= timedelta(minutes=2):
        return f" ({value / timedelta(minutes=1):g} min)"
    if setting.unit is BYTES and value >= 1024 and value % 1024 == 0:
        return f" ({value // 1024 ** 2} MiB)" if value % 1024 ** 2 == 0 else f" ({value // 1024} KiB)"
    return ""


def _default(setting: Setting) -> str:
    if setting.default is None:
        return "unset"
    if setting.unit is MAPPING:
        return "<br>".join(f"`{key}`: `{path}`" for key, path in setting.default.items())
    return f"`{setting.unit.text(setting.default)}`{_human(setting)}"


def _check(setting: Setting) -> str:
    says = f"{setting.check.says} (`{setting.check.error_id}`)"
    if setting.longer_than:
        says += f"; longer than `{setting.longer_than}` (`core.E012`)"
    return says


def _setting_row(setting: Setting) -> str:
    variable = f"`{setting.env}`" if setting.env else "— (settings only)"
    cells = (variable, f"`{setting.key}`", _default(setting), setting.unit.name, _check(setting), setting.what)
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _variable_row(variable: Variable) -> str:
    default = "unset" if variable.default is None else f"`{variable.default}`"
    what = variable.what if variable.read_by == "symphainy/settings.py" else f"{variable.what}; read by {variable.read_by}"
    return "| " + " | ".join(_cell(c) for c in (f"`{variable.name}`", default, what)) + " |"


def configuration_page() -> str:
    """docs/configuration.md, as the tables of core.conf say it."""
    parts = [INTRO, "## Product settings\n"]
    for title, settings in SECTIONS.items():
        parts.append(f"### {title}\n")
        parts.append("| variable | setting | default | unit | check | what |\n| --- | --- | --- | --- | --- | --- |")
        parts.append("\n".join(_setting_row(s) for s in settings) + "\n")
    parts.append("## Other variables\n\nRead by Django, its libraries and the deployment's files; "
                 "`symphainy/settings.py` reads them unless the row says otherwise.\n")
    for title, variables in PROJECT_VARIABLES.items():
        parts.append(f"### {title}\n")
        parts.append("| variable | default | what |\n| --- | --- | --- |")
        parts.append("\n".join(_variable_row(v) for v in variables) + "\n")
    return "\n".join(parts)


class Command(BaseCommand):
    help = f"Print docs/configuration.md as the settings table says it ({REGENERATE})."
    requires_system_checks: list[str] = []

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(configuration_page(), ending="")
