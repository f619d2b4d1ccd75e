"""Settings for the Symphainy runtime gateway.

This is the only module that reads the environment. Every variable has an embedded
default that needs nothing installed (SQLite, in-memory channel layer, local-memory
cache); `DATABASE_URL` and `REDIS_URL` switch to PostgreSQL and Redis. The product's own
knobs are declared in `core.conf` and read through `core.conf.runtime_settings`; the
`SYMPHAINY` dict holds what the environment overrides.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any, Mapping

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from core.checks import DEVELOPMENT_SECRET_KEY
from core.conf import COUNT, DEFAULTS as PRODUCT_DEFAULTS, FLAG, SECONDS, SETTINGS as PRODUCT_SETTINGS, Unit
from core.redis_options import RedisTarget, parse_sentinels, split_list

BASE_DIR = Path(__file__).resolve().parent.parent


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def _env_as(name: str, unit: Unit, default: Any) -> Any:
    """The variable read as `unit` (core.conf), or `default` when unset or empty."""
    value = _env(name)
    if value is None:
        return default
    try:
        return unit.parse(value)  # type: ignore[misc]
    except ValueError as error:
        raise ImproperlyConfigured(f"{name} {error}") from None


def _env_bool(name: str, default: bool = False) -> bool:
    return _env_as(name, FLAG, default)


def _env_int(name: str, default: int) -> int:
    return _env_as(name, COUNT, default)


def _env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in (_env(name, default) or "").split(",") if item.strip()]


def _env_seconds(name: str, default: int) -> timedelta:
    return _env_as(name, SECONDS, timedelta(seconds=default))


def product_settings_read(environ: Mapping[str, str]) -> dict[str, Any]:
    """What `environ` sets of the product settings in core.conf's table, each read as its
    unit says; an empty variable is unset. Only these go into SYMPHAINY."""
    found: dict[str, Any] = {}
    for setting in PRODUCT_SETTINGS:
        raw = environ.get(setting.env) if setting.env else None
        if raw is None or raw == "":
            continue
        try:
            found[setting.key] = setting.unit.parse(raw)  # type: ignore[misc]
        except ValueError as error:
            raise ImproperlyConfigured(f"{setting.env} {error}") from None
    return found


# --- Core -------------------------------------------------------------------------------
DEBUG = _env_bool("DEBUG", False)
# The embedded key only serves local runs and tests: with DEBUG off the service refuses
# to start on it (core.E001) unless SYMPHAINY_INSECURE_DEV_KEY=1 says this is such a run.
SECRET_KEY = _env("SECRET_KEY", DEVELOPMENT_SECRET_KEY)
# Django's test set-up adds `testserver` itself; it is no default host of the service.
ALLOWED_HOSTS = _env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = _env_list("CSRF_TRUSTED_ORIGINS", "")
# Frontends on other origins: one list, read by django-cors-headers for HTTP and by the
# socket's origin check (realtime.app). WS_ALLOWED_ORIGINS is its older name.
CORS_ALLOWED_ORIGINS = _env_list("CORS_ALLOWED_ORIGINS", _env("WS_ALLOWED_ORIGINS", "") or "")
CORS_URLS_REGEX = r"^/(api/|openapi\.json$|asyncapi\.json$)"
CORS_ALLOW_HEADERS = (
    "accept", "authorization", "content-type", "origin", "user-agent",
    "if-match", "idempotency-key", "x-request-id",
)
CORS_EXPOSE_HEADERS = ("etag", "retry-after", "www-authenticate", "x-request-id")

INSTALLED_APPS = [
    "daphne",
    # Before django.contrib.admin: its admin/base_site.html (the product's icon, the list
    # stylesheet) extends the admin's own.
    "core",
    "django.contrib.admin",
    # Before django.contrib.auth, so that its `changepassword` (which ends the user's
    # sessions) is the one manage.py finds: the first app with a command of a name wins.
    "accounts",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    # Swagger UI's files, pinned and served from this server: /docs works offline.
    "drf_spectacular_sidecar",
    "corsheaders",
    "channels",
    "sessions_runtime",
    "realtime",
    "console",
]

MIDDLEWARE = [
    "core.middleware.RequestIdMiddleware",
    "core.metrics.RequestMetricsMiddleware",
    # /health, /ready and /metrics, answered before anything validates the Host header
    # (probes and scrapes come by IP), and before the HTTPS redirect.
    "symphainy.health.ProbeMiddleware",
    # As high as possible, before anything that answers (its docs): preflights included.
    "corsheaders.middleware.CorsMiddleware",
    "core.middleware.RequestBodyLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "symphainy.urls"
ASGI_APPLICATION = "symphainy.asgi.application"
WSGI_APPLICATION = "symphainy.wsgi.application"
AUTH_USER_MODEL = "accounts.User"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------
SQLITE_PATH = Path(_env("SQLITE_PATH", str(BASE_DIR / "db.sqlite3")))
DATABASE_URL = _env("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
    # Under ASGI every request runs in a thread of its own, so persistent connections
    # (CONN_MAX_AGE) would pile up one per thread until PostgreSQL refuses clients.
    # psycopg's pool bounds them per process: several processes x DATABASE_POOL_SIZE
    # must stay under the server's max_connections. 0 turns the pool off.
    _pool_size = _env_int("DATABASE_POOL_SIZE", 20)
    if _pool_size and DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": min(2, _pool_size),
            "max_size": _pool_size,
            "timeout": _env_int("DATABASE_POOL_TIMEOUT_SECONDS", 10),
        }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": SQLITE_PATH,
            # Kept open between requests: opening SQLite (and setting its pragmas) per
            # request costs more than most queries.
            "CONN_MAX_AGE": None,
            # IMMEDIATE transactions and WAL let the embedded database take concurrent
            # logins (several threads or daphne workers) without "database is locked".
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            # A file, not memory, so that a daphne process started by the tests sees
            # the same test database.
            "TEST": {"NAME": _env("SQLITE_TEST_PATH", str(BASE_DIR / "var" / "test.sqlite3"))},
        }
    }

# --- Redis: channel layer and cache ----------------------------------------------------
# Every Redis client is built by core.redis_options.RedisTarget, directly from REDIS_URL or,
# with REDIS_SENTINELS and REDIS_SENTINEL_MASTER, through Sentinel (REDIS_URL then gives the
# db, the credentials and TLS). core.checks reports a half or malformed configuration.
REDIS_URL = _env("REDIS_URL")
REDIS_PREFIX = _env("REDIS_PREFIX", "symphainy")
REDIS_SENTINELS = split_list(_env("REDIS_SENTINELS"))
REDIS_SENTINEL_MASTER = _env("REDIS_SENTINEL_MASTER")
REDIS_SENTINEL_PASSWORD = _env("REDIS_SENTINEL_PASSWORD")
REDIS_TLS_CA_FILE = _env("REDIS_TLS_CA_FILE")
if REDIS_URL:
    _redis = RedisTarget(
        url=REDIS_URL,
        sentinels=tuple(parse_sentinels(REDIS_SENTINELS)[0]),
        sentinel_master=REDIS_SENTINEL_MASTER,
        sentinel_password=REDIS_SENTINEL_PASSWORD,
        tls_ca_file=REDIS_TLS_CA_FILE,
    )
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "realtime.layers.RedisChannelLayer",
            "CONFIG": {
                "hosts": [_redis.channel_layer_host(
                    # redis-py caps a pool at 100 connections by default. Sockets join no
                    # group: the layer carries executions for `runworker` and /ready's check
                    # only (docs/architecture.md#the-channel-layer).
                    max_connections=_env_int("REDIS_MAX_CONNECTIONS", 1000),
                    # redis-py's default read timeout (5 s) equals channels-redis' blocking
                    # pop (5 s): an idle `runworker`'s receive would time out.
                    socket_timeout=15,
                )],
                "prefix": REDIS_PREFIX,
                "capacity": _env_int("CHANNEL_LAYER_CAPACITY", 200),
                "expiry": 30,
            },
        }
    }
    CACHES = {"default": _redis.cache(KEY_PREFIX=REDIS_PREFIX)}
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Auth -------------------------------------------------------------------------------
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": _env_seconds("ACCESS_TOKEN_LIFETIME_SECONDS", 15 * 60),
    "REFRESH_TOKEN_LIFETIME": _env_seconds("REFRESH_TOKEN_LIFETIME_SECONDS", 24 * 3600),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    # One algorithm, pinned: PyJWT is called with algorithms=[ALGORITHM] only.
    "ALGORITHM": "HS256",
    "SIGNING_KEY": _env("JWT_SIGNING_KEY", SECRET_KEY),
    "ISSUER": _env("JWT_ISSUER", "symphainy"),
    "LEEWAY": 0,
    "AUTH_HEADER_TYPES": ("Bearer",),
    "USER_ID_FIELD": "id",
    "USER_ID_CLAIM": "user_id",
    "TOKEN_TYPE_CLAIM": "token_type",
    "JTI_CLAIM": "jti",
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.authentication.SessionTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["core.drf.BoundedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.http.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "core.drf.Pagination",
    "PAGE_SIZE": 50,
    "UNAUTHENTICATED_USER": None,
    # DRF trusts X-Forwarded-For when NUM_PROXIES is None, which would let any client
    # pick its own throttle bucket. Only count proxies the deployment says it has.
    "NUM_PROXIES": _env_int("TRUSTED_PROXY_COUNT", 0),
    "DEFAULT_THROTTLE_RATES": {
        "login_address": _env("THROTTLE_LOGIN_ADDRESS", "30/min"),
        "register_address": _env("THROTTLE_REGISTER_ADDRESS", "10/min"),
        "refresh_address": _env("THROTTLE_REFRESH_ADDRESS", "60/min"),
    },
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Symphainy runtime gateway",
    "DESCRIPTION": "Identity, runtime sessions and the live sockets that may talk to them.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- The product's own settings (read through core.conf.runtime_settings) -------------
# Declared once, in core.conf's table (key, default, variable, unit, check); SYMPHAINY holds
# only what the environment sets (as REST_FRAMEWORK holds only DRF's overrides).
SYMPHAINY = product_settings_read(os.environ)

# --- HTTP hardening ---------------------------------------------------------------------
DATA_UPLOAD_MAX_MEMORY_SIZE = SYMPHAINY.get("MAX_REQUEST_BYTES", PRODUCT_DEFAULTS["MAX_REQUEST_BYTES"])
SECURE_CONTENT_TYPE_NOSNIFF = True
CSRF_FAILURE_VIEW = "core.http.csrf_failure"
X_FRAME_OPTIONS = "DENY"
SECURE_HSTS_SECONDS = _env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = _env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = _env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_SSL_REDIRECT = _env_bool("SECURE_SSL_REDIRECT", False)
SESSION_COOKIE_SECURE = _env_bool("SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = _env_bool("SECURE_COOKIES", False)
if _env_bool("SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- I18N, static -----------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# Times with seconds and zone in the admin (core/formats/en/formats.py).
FORMAT_MODULE_PATH = ["core.formats"]
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve straight from the apps' static folders when collectstatic has not run (local use).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# --- Logging ----------------------------------------------------------------------------
# LOG_FORMAT=json writes one JSON object per line with the request id; tokens are
# redacted from every record either way.
LOG_FORMAT = _env("LOG_FORMAT", "plain")
# prometheus_client reads it from the environment itself; /metrics reads it here.
PROMETHEUS_MULTIPROC_DIR = _env("PROMETHEUS_MULTIPROC_DIR")
LOGGING_CONFIG = "core.logs.logging_configure"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "redact": {"()": "core.logs.RedactSecretsFilter"},
        "request_id": {"()": "core.middleware.RequestIdFilter"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": ["asctime", "levelname", "name", "request_id", "message"],
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
            "filters": ["request_id", "redact"],
        }
    },
    "root": {"handlers": ["console"], "level": _env("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        # gunicorn's own lines (deploy/gunicorn.conf.py uses this dict) and daphne's access
        # lines (symphainy.serve) go through the same handler: one format per run.
        "gunicorn.error": {"handlers": ["console"], "level": "INFO", "propagate": False},
        # Python warnings, routed to logging by core.logs.logging_configure, in the same format too.
        "py.warnings": {"handlers": ["console"], "propagate": False},
        "gunicorn.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}

# --- Tests ------------------------------------------------------------------------------
# With SYMPHAINY_REQUIRE_SERVICES=1 the test suite fails, never skips, when PostgreSQL or
# Redis is not configured or not reachable.
REQUIRE_SERVICES = _env_bool("SYMPHAINY_REQUIRE_SERVICES", False)
