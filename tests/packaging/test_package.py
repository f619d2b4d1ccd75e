"""The project installs as a package (pyproject.toml), and a platform's settings module
and handlers then live outside the checkout, as docs/extending.md's example shows."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.live import ROOT

PACKAGES = ["core", "accounts", "sessions_runtime", "realtime", "console", "symphainy"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a copy of the sources, so that setuptools' build/ never lands in the checkout.
    work = tmp_path_factory.mktemp("package")
    src = work / "src"
    src.mkdir()
    for name in ["pyproject.toml", "README.md", "requirements.txt"]:
        shutil.copy(ROOT / name, src / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "dist"), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = (work / "dist").glob("symphainy_gateway-*.whl")
    return built


def test_the_wheel_holds_the_apps_their_files_and_the_runtime_pins_only(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in [
        "symphainy/settings.py", "symphainy/wsgi.py", "symphainy/asgi.py", "symphainy/health.py",
        "console/static/console/symphainy-client.js", "console/templates/console/index.html",
        "accounts/migrations/0001_initial.py", "sessions_runtime/migrations/0001_initial.py",
    ]:
        assert expected in names, expected
    assert not [n for n in names if n.startswith(("tests/", "bench/", "deploy/", "examples/"))]
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("/METADATA"))).decode()
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert "Django==5.2.19" in requires and any(r.startswith("gunicorn==") for r in requires)
    assert not [r for r in requires if r.split("=")[0] in ("pytest", "playwright", "hypothesis", "schemathesis")]


def test_a_platform_settings_module_outside_the_checkout_uses_the_installed_package(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)], check=True, timeout=300)
    platform = tmp_path / "platform" / "mysite"
    platform.mkdir(parents=True)
    (platform / "__init__.py").write_text("")
    (platform / "settings.py").write_text(textwrap.dedent('''
        from symphainy.settings import *  # noqa: F403

        SYMPHAINY["INTENT_HANDLERS"] = {
            **SYMPHAINY.get("INTENT_HANDLERS", {"echo": "sessions_runtime.handlers.echo", "batch": "sessions_runtime.handlers.batch"}),
            "report.build": "mysite.handlers.build_report",
        }
    '''))
    (platform / "handlers.py").write_text("async def build_report(ctx):\n    return {'rows': 0}\n")
    probe = textwrap.dedent('''
        import django, importlib
        django.setup()
        import symphainy
        from core.conf import runtime_settings
        path = runtime_settings.INTENT_HANDLERS["report.build"]
        module, name = path.rsplit(".", 1)
        print(symphainy.__file__)
        print(getattr(importlib.import_module(module), name).__name__)
    ''')
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE")},
        "PYTHONPATH": os.pathsep.join([str(site), str(tmp_path / "platform")]),
        "DJANGO_SETTINGS_MODULE": "mysite.settings", "SQLITE_PATH": str(tmp_path / "db.sqlite3"),
    }
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    installed_at, handler = result.stdout.split()
    assert Path(installed_at).is_relative_to(site) and handler == "build_report"
    check = subprocess.run([sys.executable, "-m", "django", "check"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
