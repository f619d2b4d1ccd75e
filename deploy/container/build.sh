#!/bin/sh
# The image's build steps, in one place: deploy/container/Dockerfile runs them, and
# tests/deploy/test_container.py runs the same script in a Debian root made with
# debootstrap (no Docker engine there).
#
#   build.sh dependencies   the virtualenv in $APP_DIR/.venv with requirements.txt (runtime only)
#   build.sh application    the user, the static files, the bytecode, the metrics directory
#   build.sh                both (the checkout already in $APP_DIR)
#
# Run as root from anywhere; $APP_DIR holds the checkout (the Dockerfile copies it there
# first). The files stay root's: the service's user reads them and writes nowhere but
# $PROMETHEUS_MULTIPROC_DIR (and /tmp).
set -eu

APP_DIR=${APP_DIR:-/srv/symphainy}
PYTHON=${PYTHON:-python3}
APP_USER=symphainy
# Numeric, so that Kubernetes' runAsNonRoot can check it (deploy/kubernetes/).
APP_UID=10001
METRICS_DIR=${PROMETHEUS_MULTIPROC_DIR:-/run/symphainy/metrics}

dependencies() {
    "$PYTHON" -m venv "$APP_DIR/.venv"
    "$APP_DIR/.venv/bin/pip" install --no-cache-dir --disable-pip-version-check --no-input \
        -r "$APP_DIR/requirements.txt"
}

application() {
    # Its group has the same number (the Dockerfile's USER 10001:10001).
    getent group "$APP_USER" >/dev/null || groupadd --system --gid "$APP_UID" "$APP_USER"
    if ! getent passwd "$APP_USER" >/dev/null; then
        useradd --system --uid "$APP_UID" --gid "$APP_UID" --no-create-home \
            --home-dir /nonexistent --shell /usr/sbin/nologin "$APP_USER"
    fi
    # Into $APP_DIR/staticfiles (STATIC_ROOT), served by whitenoise from gunicorn. No
    # secret is needed to collect: the public development key stands in for this one
    # command (core.E001 is not among collectstatic's checks).
    (cd "$APP_DIR" && env -u DATABASE_URL -u REDIS_URL DJANGO_SETTINGS_MODULE=symphainy.settings \
        "$APP_DIR/.venv/bin/python" manage.py collectstatic --noinput --verbosity 0)
    # The processes run with PYTHONDONTWRITEBYTECODE=1 on a read-only root: compile now.
    "$APP_DIR/.venv/bin/python" -m compileall -q -x '/(\.venv|tests|bench)/' "$APP_DIR"
    mkdir -p "$METRICS_DIR"
    chown "$APP_USER:$APP_USER" "$METRICS_DIR"
}

case "${1:-all}" in
    dependencies) dependencies ;;
    application) application ;;
    all) dependencies && application ;;
    *) echo "usage: $0 [dependencies|application|all]" >&2; exit 2 ;;
esac
