"""Settings: production readiness and the embedded defaults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION_ENV = {
    "SECRET_KEY": "x" * 20 + "a-real-secret-key-with-enough-entropy-0123456789",
    "DEBUG": "0",
    "ALLOWED_HOSTS": "gateway.example.com",
    "SECURE_SSL_REDIRECT": "1",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "SECURE_HSTS_PRELOAD": "1",
    "SECURE_COOKIES": "1",
}


def _check_deploy(extra_env: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in PRODUCTION_ENV}
    env.update(extra_env)
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


def test_check_deploy_is_clean_with_a_production_environment():
    result = _check_deploy(PRODUCTION_ENV)
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_deploy_flags_the_embedded_secret_key():
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "SECRET_KEY"}
    result = _check_deploy(env)
    assert result.returncode != 0
    assert "security.W009" in result.stdout + result.stderr


def test_argon2_is_the_password_hasher():
    # The suite swaps in a cheaper Argon2 per test; the configured first hasher is Argon2.
    from symphainy import settings as project_settings

    assert project_settings.PASSWORD_HASHERS[0] == "django.contrib.auth.hashers.Argon2PasswordHasher"
    assert settings.SIMPLE_JWT["ALGORITHM"] == "HS256"
    assert settings.REST_FRAMEWORK["NUM_PROXIES"] == 0


def _product_settings(extra_env: dict[str, str]) -> str:
    """`settings.SYMPHAINY` as a fresh process sees it, with none of the product's
    variables set but `extra_env`."""
    from core.conf import SETTINGS

    env = {k: v for k, v in os.environ.items() if k not in {s.env for s in SETTINGS}}
    env.update(extra_env)
    code = "import os; os.environ['DJANGO_SETTINGS_MODULE']='symphainy.settings'; from django.conf import settings; print(sorted(settings.SYMPHAINY.items()))"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60, check=True).stdout.strip()


def test_product_defaults_are_declared_once_and_settings_hold_only_what_the_environment_sets():
    assert _product_settings({}) == "[]"
    assert _product_settings({"WS_MAX_SOCKETS_PER_USER": "7"}) == "[('WS_MAX_SOCKETS_PER_USER', 7)]"
    # An empty variable is unset.
    assert _product_settings({"WS_MAX_SOCKETS_PER_USER": ""}) == "[]"


# --- The product settings come from core.conf's table -----------------------------------
# A valid value for each unit, other than the default; and text each unit must refuse.
# A unit missing here fails the tests below: add its sample when adding a unit.
def _sample(setting) -> str:
    from datetime import timedelta

    default, unit = setting.default, setting.unit.name
    return {
        "seconds": lambda: str(int(default.total_seconds()) + 1),
        "milliseconds": lambda: str(int(default / timedelta(milliseconds=1)) + 1),
        "seconds (decimal)": lambda: str(default + 0.5),
        "bytes": lambda: str(default + 1),
        "count": lambda: str(default + 1),
        "characters": lambda: str(default + 1),
        "flag (1/0)": lambda: "0" if default else "1",
        "text": lambda: f"{default or ''}-sample",
        "rate (N/period)": lambda: "7/min",
        "dotted path": lambda: "mysite.agents.answer",
        "networks (comma-separated CIDR)": lambda: "10.0.0.0/8,fd00::/8",
    }[unit]()


GARBAGE = {
    "seconds": "1h", "milliseconds": "0.5", "seconds (decimal)": "soon", "bytes": "1MB", "count": "many", "characters": "long",
    "flag (1/0)": "maybe", "networks (comma-separated CIDR)": "10.0.0.0/8,intranet",
}
# Any text is a value of these; the system checks judge it (a bad rate is core.E003).
TAKEN_AS_IT_IS = {"text", "rate (N/period)", "dotted path"}


def test_every_variable_of_the_table_reaches_runtime_settings():
    import json

    from core.conf import SETTINGS

    settable = [s for s in SETTINGS if s.env]
    env = {k: v for k, v in os.environ.items() if k not in {s.env for s in settable}}
    env.update({s.env: _sample(s) for s in settable})
    code = (
        "import json, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'symphainy.settings'\n"
        "from core.conf import SETTINGS, runtime_settings\n"
        "print(json.dumps({s.key: repr(getattr(runtime_settings, s.key)) for s in SETTINGS}))"
    )
    seen = json.loads(subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                                     timeout=60, check=True).stdout)
    for setting in settable:
        expected = setting.unit.parse(_sample(setting))
        assert expected != setting.default, setting.key
        assert seen[setting.key] == repr(expected), f"{setting.env} did not reach runtime_settings.{setting.key}"


def test_every_unit_refuses_garbage_naming_the_variable():
    import re

    import pytest
    from django.core.exceptions import ImproperlyConfigured

    from core.conf import SETTINGS
    from symphainy.settings import product_settings_read

    for setting in SETTINGS:
        if not setting.env:
            continue
        if setting.unit.name in TAKEN_AS_IT_IS:
            assert product_settings_read({setting.env: "garbage"}) == {setting.key: "garbage"}
            continue
        garbage = GARBAGE[setting.unit.name]
        with pytest.raises(ImproperlyConfigured, match=rf"^{setting.env} must .*{re.escape(repr(garbage.split(',')[-1]))}"):
            product_settings_read({setting.env: garbage})
    assert product_settings_read({setting.env: "" for setting in SETTINGS if setting.env}) == {}


def test_the_other_variables_settings_reads_are_declared_with_their_defaults():
    """settings.py's own variables (DATABASE_URL, SECRET_KEY...) against core.conf's list
    of them, which docs/configuration.md shows: the same names, the same defaults."""
    import ast

    from core.conf import PROJECT_VARIABLES

    declared = {v.name: v for vs in PROJECT_VARIABLES.values() for v in vs}
    read: dict[str, object] = {}
    for node in ast.walk(ast.parse((ROOT / "symphainy" / "settings.py").read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id.startswith("_env")
                and node.args and isinstance(node.args[0], ast.Constant)):
            default = node.args[1] if len(node.args) > 1 else ast.Constant(None)
            literal = all(isinstance(n, (ast.Constant, ast.BinOp, ast.operator)) for n in ast.walk(default))
            # A literal, or arithmetic on literals (15 * 60); a computed default (BASE_DIR / ...,
            # another variable) is not compared.
            read[node.args[0].value] = eval(ast.unparse(default), {"__builtins__": {}}) if literal else ...
    by_settings = {name for name, v in declared.items() if v.read_by == "symphainy/settings.py"}
    assert set(read) == by_settings
    for name, value in read.items():
        if value is not ...:
            text = ("1" if value else "0") if isinstance(value, bool) else None if value in (None, "") else str(value)
            assert declared[name].default == text, name
    for variable in declared.values():
        if variable.read_by != "symphainy/settings.py":
            for path in variable.read_by.split("`")[1::2]:
                assert variable.name in (ROOT / path).read_text(), f"{path} does not read {variable.name}"
