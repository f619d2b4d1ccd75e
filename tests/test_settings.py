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
