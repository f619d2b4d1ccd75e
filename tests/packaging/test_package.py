"""The project installs as a package (pyproject.toml): the wheel, installed into a fresh
venv, serves every app's pages and files from the installed copy, and a platform's settings
module and handlers then live outside the checkout, as docs/extending.md's example shows."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import sysconfig
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


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv holding the wheel, its runtime packages taken from this run's venv (a .pth
    line after its own site-packages: offline and quick), and never the checkout."""
    home = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(home)], check=True, timeout=120)
    python = home / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True, timeout=60).stdout.strip())
    (site / "zz_runtime_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    result = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                            capture_output=True, text=True, timeout=300, cwd=home)
    assert result.returncode == 0, result.stdout + result.stderr
    return python


def installed_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a process of the installed copy: no PYTHONPATH (the checkout is not
    on sys.path; it runs from `tmp_path`), its own SQLite file."""
    keep = {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL", "SYMPHAINY_REQUIRE_SERVICES")}
    return {**keep, "DJANGO_SETTINGS_MODULE": "symphainy.settings", "SQLITE_PATH": str(tmp_path / "db.sqlite3"), "SECRET_KEY": "packaging-test-" + "k" * 40, **extra}


ADMIN_PAGES = textwrap.dedent('''
    import django, json
    django.setup()
    from django.core.management import call_command
    from django.test import Client
    from django.test.utils import setup_test_environment
    import symphainy
    from accounts.models import Membership
    from accounts.services import membership_add, tenant_create, user_create
    from core.caller import Caller
    from sessions_runtime.services import session_create
    from sessions_runtime.session_intents import SessionIntentAction, session_intent_build

    setup_test_environment()
    call_command("migrate", verbosity=0)
    caller = Caller.command()
    tenant = tenant_create(name="Packaging", slug="packaging", caller=caller)
    user = user_create(email="ops@example.com", password="x" * 20, is_staff=True, caller=caller)
    user.is_superuser = True
    user.save()
    membership_add(user=user, tenant=tenant, role="owner", caller=caller)
    intent = session_intent_build(user_id=user.pk, tenant_id=tenant.pk, role="owner", action=SessionIntentAction.COMMAND)
    session = session_create(intent=intent, caller=Caller.system())
    client = Client()
    client.force_login(user)
    pages = {}
    for name, url in [
        ("change", f"/admin/sessions_runtime/runtimesession/{session.pk}/change/"),
        ("end", f"/admin/sessions_runtime/runtimesession/{session.pk}/end/"),
        ("css", "/static/core/admin-lists.css"),
        ("console_js", "/static/console/symphainy-client.js"),
    ]:
        response = client.get(url)
        body = b"".join(response.streaming_content) if response.streaming else response.content
        pages[name] = {"status": response.status_code, "body": body.decode(errors="replace")}
    print(json.dumps({"package": symphainy.__file__, "pages": pages}))
''')


def test_the_installed_wheel_renders_the_admins_session_pages_and_serves_every_apps_static_files(venv, tmp_path):
    """Every template and static file of every app is in the wheel: the session's admin page
    (its own change form), its End confirmation and the admin lists' CSS, from the installed copy."""
    result = subprocess.run([str(venv), "-c", ADMIN_PAGES], cwd=tmp_path, env=installed_env(tmp_path),
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(answer["package"]).is_relative_to(venv.parent.parent), answer["package"]
    pages = {name: page for name, page in answer["pages"].items()}
    assert {name: page["status"] for name, page in pages.items()} == {"change": 200, "end": 200, "css": 200, "console_js": 200}, {
        name: page["body"][:2000] for name, page in pages.items() if page["status"] != 200
    }
    assert "End session" in pages["change"]["body"] and "core/admin-lists.css" in pages["change"]["body"]
    assert "Note for the audit trail" in pages["end"]["body"]
    assert pages["css"]["body"] == (ROOT / "core" / "static" / "core" / "admin-lists.css").read_text()


def test_every_template_and_static_file_of_the_checkout_is_in_the_wheel(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    files = [
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES for folder in ("templates", "static") if (ROOT / package / folder).is_dir()
        for path in (ROOT / package / folder).rglob("*") if path.is_file()
    ]
    assert len(files) >= 8
    assert sorted(set(files) - names) == []


def test_a_platform_settings_module_outside_the_checkout_uses_the_installed_package(venv, tmp_path):
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
    env = {**installed_env(tmp_path), "PYTHONPATH": str(tmp_path / "platform"), "DJANGO_SETTINGS_MODULE": "mysite.settings"}
    result = subprocess.run([str(venv), "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    installed_at, handler = result.stdout.split()
    assert Path(installed_at).is_relative_to(venv.parent.parent) and handler == "build_report"
    check = subprocess.run([str(venv), "-m", "django", "check"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
