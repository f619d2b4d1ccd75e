"""The product's own settings: declared once, in `SECTIONS`, and read through one lazy object.

Each `Setting` names its key, default, environment variable, unit, check and what it does.
From this one table `symphainy/settings.py` reads the environment (the only module that
does), `core.checks` validates the values at start-up, and `docs/configuration.md` is
written (`python manage.py settings_doc > docs/configuration.md`), with the project's other
environment variables (Django's, the libraries', the deployment's) from `PROJECT_VARIABLES`.

`runtime_settings.SESSION_IDLE_TTL` reads `settings.SYMPHAINY["SESSION_IDLE_TTL"]`, falling
back to the default here. The object reloads in place when tests override settings, so
no module keeps a stale copy (the pattern of DRF's `api_settings`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable

from django.conf import settings
from django.core.signals import setting_changed


# --- Units: how a value is written in the environment ------------------------------------
@dataclass(frozen=True)
class Unit:
    """How a setting's value is written in the environment: `parse` turns the text into the
    value (ValueError saying what was expected), `text` writes a value back as that text."""

    name: str
    parse: Callable[[str], Any] | None
    text: Callable[[Any], str] = str


def _whole(raw: str, what: str = "an integer") -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"must be {what}, not {raw!r}") from None


def _decimal(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"must be a number, not {raw!r}") from None


def _flag(raw: str) -> bool:
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"must be a boolean (1/0, true/false), not {raw!r}")


def _items(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


def _networks(raw: str) -> list[str]:
    networks = _items(raw)
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ValueError(f"must list networks such as 10.0.0.0/8, not {network!r}") from None
    return networks


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


SECONDS = Unit("seconds", lambda raw: timedelta(seconds=_whole(raw, "a whole number of seconds")),
               lambda value: _number(value.total_seconds()))
MILLISECONDS = Unit("milliseconds", lambda raw: timedelta(milliseconds=_whole(raw, "a whole number of milliseconds")),
                    lambda value: _number(value / timedelta(milliseconds=1)))
# A plain number of seconds, fractions allowed (the handlers' pacing delays).
DECIMAL_SECONDS = Unit("seconds (decimal)", _decimal, str)
BYTES = Unit("bytes", _whole)
COUNT = Unit("count", _whole)
CHARACTERS = Unit("characters", _whole)
FLAG = Unit("flag (1/0)", _flag, lambda value: "1" if value else "0")
# Any text is taken as it is; the check judges it (a rate that does not parse is core.E003).
TEXT = Unit("text", lambda raw: raw)
RATE = Unit("rate (N/period)", lambda raw: raw)
DOTTED_PATH = Unit("dotted path", lambda raw: raw)
NETWORKS = Unit("networks (comma-separated CIDR)", _networks, ",".join)
# Only in settings.SYMPHAINY: a dict has no environment spelling.
MAPPING = Unit("mapping", None, lambda value: ", ".join(f"{k}: {v}" for k, v in value.items()))


# --- Checks: what a value must be (core.checks runs them at start-up) ---------------------
@dataclass(frozen=True)
class Check:
    """What a value must be: `says` in the docs, `problems(name, value)` the messages of a
    value that is not, reported as `error_id`. A check without `problems` is run by the app
    that owns the setting's meaning (its error id says which)."""

    says: str
    error_id: str
    problems: Callable[[str, Any], list[str]] | None = None


def _in(name: str, problem: str) -> list[str]:
    return [f"SYMPHAINY[{name!r}] {problem}"]


def _duration(*, zero_allowed: bool) -> Callable[[str, Any], list[str]]:
    def problems(name: str, value: Any) -> list[str]:
        if not isinstance(value, timedelta):
            return _in(name, f"must be a timedelta, not {value!r}.")
        if not zero_allowed and value <= timedelta(0):
            return _in(name, f"must be longer than zero, not {value.total_seconds():g} s.")
        if value < timedelta(0):
            return _in(name, f"must be zero or more, not {value.total_seconds():g} s.")
        return []
    return problems


def _at_least(minimum: int) -> Callable[[str, Any], list[str]]:
    def problems(name: str, value: Any) -> list[str]:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            return _in(name, f"must be a whole number of at least {minimum}, not {value!r}.")
        return []
    return problems


def _seconds_not_negative(name: str, value: Any) -> list[str]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return _in(name, f"must be zero or more seconds, not {value!r}.")
    return []


def _rate(name: str, value: Any) -> list[str]:
    from core.limits import parse_rate

    try:
        parse_rate(value if isinstance(value, str) else "")
    except ValueError:
        return [f"{name}: Invalid rate {value!r}; expected like '60/10s' or '100/min'."]
    return []


def _text(*, unset_allowed: bool) -> Callable[[str, Any], list[str]]:
    def problems(name: str, value: Any) -> list[str]:
        if value is None and unset_allowed:
            return []
        if not isinstance(value, str) or not value.strip():
            return _in(name, f"must be a non-empty string{' or unset' if unset_allowed else ''}, not {value!r}.")
        return []
    return problems


def _true_or_false(name: str, value: Any) -> list[str]:
    return [] if isinstance(value, bool) else _in(name, f"must be True or False, not {value!r}.")


def _cookie_name(name: str, value: Any) -> list[str]:
    # RFC 6265's cookie-name is an RFC 2616 token: visible ASCII but separators.
    if not isinstance(value, str) or not value or any(
        not 32 < ord(char) < 127 or char in '()<>@,;:\\"/[]?={}' for char in value
    ):
        return _in(name, f"must be a cookie name (an RFC 6265 token: ASCII letters, digits and !#$%&'*+-.^_`|~), not {value!r}.")
    return []


def _network_list(name: str, value: Any) -> list[str]:
    if not isinstance(value, (list, tuple)):
        return _in(name, f"must be a list of networks, not {value!r}.")
    found = []
    for network in value:
        try:  # parsed as core.metrics parses it
            ipaddress.ip_network(network, strict=False)
        except (TypeError, ValueError):
            found += _in(name, f"holds {network!r}, which is not a network like '10.0.0.0/8' or '::1/128'.")
    return found


POSITIVE = Check("> 0", "core.E005", _duration(zero_allowed=False))
ZERO_OR_MORE = Check("≥ 0", "core.E005", _duration(zero_allowed=True))
AT_LEAST_ONE = Check("≥ 1", "core.E006", _at_least(1))
AT_LEAST_ZERO = Check("≥ 0", "core.E006", _at_least(0))
DELAY = Check("≥ 0", "core.E007", _seconds_not_negative)
A_RATE = Check("parses as a rate, e.g. 60/10s or 100/min", "core.E003", _rate)
NOT_EMPTY = Check("not empty", "core.E008", _text(unset_allowed=False))
NOT_EMPTY_OR_UNSET = Check("not empty, or unset", "core.E008", _text(unset_allowed=True))
TRUE_OR_FALSE = Check("true or false", "core.E008", _true_or_false)
A_COOKIE_NAME = Check("a cookie name (an RFC 6265 token: no spaces, `;`, `=` or quotes)", "core.E008", _cookie_name)
A_NETWORK_LIST = Check("each a network, e.g. 10.0.0.0/8", "core.E008", _network_list)
# Checked by sessions_runtime.checks, which knows the backends, runners and handlers.
A_STATE_BACKEND = Check("database, memory, redis or a backend's dotted path that imports", "sessions_runtime.E001")
AN_EXECUTION_RUNNER = Check("asyncio or worker", "sessions_runtime.E002")
HANDLER_PATHS = Check("each a dotted path to a callable that imports", "sessions_runtime.E003")
AN_AGENT_PATH = Check("a dotted path to a callable that imports", "sessions_runtime.E004")
# A setting declared `longer_than` another must be: its liveness window outlasts the beat.
LONGER_THAN_ERROR = "core.E012"


# --- The table --------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """One product setting. `env` is the environment variable that sets it (None: only
    settings.SYMPHAINY can); `longer_than` names a duration this one must exceed."""

    key: str
    default: Any
    env: str | None
    unit: Unit
    check: Check
    what: str
    longer_than: str | None = None


S = Setting
SECTIONS: dict[str, tuple[Setting, ...]] = {
    "Sessions": (
        S("SESSION_ABSOLUTE_TTL", timedelta(hours=24), "SESSION_ABSOLUTE_TTL_SECONDS", SECONDS, POSITIVE,
          "a session's absolute lifetime"),
        S("SESSION_IDLE_TTL", timedelta(hours=1), "SESSION_IDLE_TTL_SECONDS", SECONDS, POSITIVE,
          "idle expiry, pushed forward by activity"),
        S("SESSION_TOUCH_INTERVAL", timedelta(seconds=60), "SESSION_TOUCH_INTERVAL_SECONDS", SECONDS, ZERO_OR_MORE,
          "at most one idle-expiry write per session (REST) or socket per interval; `0` writes on every request"),
        S("SESSION_INTENT_TTL", timedelta(seconds=30), "SESSION_INTENT_TTL_SECONDS", SECONDS, POSITIVE,
          "how long a session intent stays valid"),
        S("SESSION_METADATA_MAX_BYTES", 16 * 1024, "SESSION_METADATA_MAX_BYTES", BYTES, AT_LEAST_ONE,
          "the largest session `metadata`"),
        S("MAX_ACTIVE_SESSIONS_PER_USER", 10, "MAX_ACTIVE_SESSIONS_PER_USER", COUNT, AT_LEAST_ONE,
          "over it, the oldest active session ends as `superseded`"),
        S("SESSION_CREATE_RATE", "20/min", "SESSION_CREATE_RATE", RATE, A_RATE,
          "per user: sessions made with `/api/session/create`; over it, 429 with `Retry-After`"),
        S("ACCESS_CACHE_TTL", timedelta(seconds=5), "ACCESS_CACHE_TTL_SECONDS", SECONDS, ZERO_OR_MORE,
          "how long a handshake may reuse a session-access snapshot ([architecture.md](architecture.md)); `0` turns "
          "the cache off"),
    ),
    "Logins and tokens": (
        S("REFRESH_REUSE_GRACE", timedelta(seconds=10), "REFRESH_REUSE_GRACE_SECONDS", SECONDS, ZERO_OR_MORE,
          "a just-rotated refresh token presented again this soon by the same client (address and User-Agent), "
          "while its successor is unused, gets that successor instead of ending the session "
          "([security.md](security.md)); `0` turns it off"),
        S("AUTH_REFRESH_COOKIE", False, "AUTH_REFRESH_COOKIE", FLAG, TRUE_OR_FALSE,
          "`1` lets a browser keep its session over a reload: a login that asks (`refresh_cookie: true`) gets its "
          "refresh token as an HttpOnly, Secure, SameSite=Strict cookie scoped to `/api/auth/refresh` instead of "
          "in the body ([security.md](security.md#the-refresh-cookie)); `0`: no cookie is ever set or read"),
        S("AUTH_REFRESH_COOKIE_NAME", "symphainy_refresh", "AUTH_REFRESH_COOKIE_NAME", TEXT, A_COOKIE_NAME,
          "the refresh cookie's name (`__Secure-symphainy_refresh` makes browsers refuse it unless Secure)"),
        S("LOGIN_LOCKOUT_AFTER_FAILURES", 5, "LOGIN_LOCKOUT_AFTER_FAILURES", COUNT, AT_LEAST_ONE,
          "failed logins of one account *from one address* before that pair is locked (other addresses are not "
          "affected)"),
        S("LOGIN_LOCKOUT", timedelta(seconds=30), "LOGIN_LOCKOUT_SECONDS", SECONDS, POSITIVE,
          "the first lock; it doubles with each further failure (429 with `Retry-After`)"),
        S("LOGIN_LOCKOUT_MAX", timedelta(minutes=15), "LOGIN_LOCKOUT_MAX_SECONDS", SECONDS, POSITIVE,
          "the longest lock"),
        S("LOGIN_HASH_CONCURRENCY", 0, "LOGIN_HASH_CONCURRENCY", COUNT, AT_LEAST_ZERO,
          "password hashes running at once per process; `0`: one per core"),
        S("LOGIN_HASH_QUEUE", 100, "LOGIN_HASH_QUEUE", COUNT, AT_LEAST_ZERO,
          "logins waiting for a hash; beyond, 503 with `Retry-After`"),
        S("LOGIN_HASH_WAIT", timedelta(seconds=15), "LOGIN_HASH_WAIT_SECONDS", SECONDS, POSITIVE,
          "how long a login may wait for a hash; beyond, 503 with `Retry-After`"),
        S("ADMIN_LOGIN_FAILURES_PER_MINUTE", 10, "ADMIN_LOGIN_FAILURES_PER_MINUTE", COUNT, AT_LEAST_ONE,
          "failed `/admin/login/` attempts per client address and minute; beyond, 429"),
        S("REGISTRATION_OPEN", True, "REGISTRATION_OPEN", FLAG, TRUE_OR_FALSE,
          "`0` turns self-registration off: `POST /api/auth/register` answers 403 `registration_closed` "
          "(operators still create users with `manage.py`); set it in production"),
        S("INSECURE_DEV_KEY", False, "SYMPHAINY_INSECURE_DEV_KEY", FLAG, TRUE_OR_FALSE,
          "`1` lets the public development `SECRET_KEY` through with `DEBUG=0` (`core.E001`): local runs only "
          "(`make run` and the tests set it); never in production"),
    ),
    "Requests": (
        S("MAX_REQUEST_BYTES", 1024 * 1024, "MAX_REQUEST_BYTES", BYTES, AT_LEAST_ONE,
          "larger HTTP bodies get 413: on `Content-Length` before the body is read, chunked ones as soon as they "
          "pass it"),
        S("JSON_MAX_DEPTH", 64, "JSON_MAX_DEPTH", COUNT, AT_LEAST_ONE,
          "deepest nesting of a JSON body or socket frame; deeper (and `NaN`/`Infinity`) is 400 / an "
          "`invalid_json` frame"),
    ),
    "Sockets": (
        S("WS_MAX_SOCKETS_PER_USER", 20, "WS_MAX_SOCKETS_PER_USER", COUNT, AT_LEAST_ONE,
          "open sockets of one user over every process (counted in Redis: "
          "[architecture.md](architecture.md#the-per-user-socket-cap)); over it, a handshake closes with 4429"),
        S("WS_MAX_MESSAGE_BYTES", 64 * 1024, "WS_MAX_MESSAGE_BYTES", BYTES, AT_LEAST_ONE,
          "larger frames close the socket with 1009"),
        S("WS_MAX_SEND_BUFFER_BYTES", 1024 * 1024, "WS_MAX_SEND_BUFFER_BYTES", BYTES, AT_LEAST_ONE,
          "bytes queued for a peer that stopped reading before the server drops it"),
        S("WS_MESSAGE_RATE", "60/10s", "WS_MESSAGE_RATE", RATE, A_RATE,
          "per-socket message budget; over it, 4429"),
        S("WS_RECHECK_INTERVAL", timedelta(seconds=30), "WS_RECHECK_INTERVAL_SECONDS", SECONDS, POSITIVE,
          "how often an open socket re-checks its session (a last line of defence; ends arrive through the "
          "event log): [architecture.md](architecture.md#the-periodic-re-check)"),
        S("WS_HEARTBEAT_INTERVAL", timedelta(seconds=25), "WS_HEARTBEAT_INTERVAL_SECONDS", SECONDS, POSITIVE,
          "the `heartbeat_s` advertised to clients (send `ping` that often)"),
        S("WS_CONNECTION_FLUSH_INTERVAL", timedelta(milliseconds=250), "WS_CONNECTION_FLUSH_INTERVAL_MS",
          MILLISECONDS, POSITIVE, "how often a process writes its connection records in bulk"),
    ),
    "Server processes": (
        S("SERVER_INSTANCE", None, "SERVER_INSTANCE", TEXT, NOT_EMPTY_OR_UNSET,
          "this process's name in connection records; unset: `host:pid:random`"),
        S("SERVER_LISTEN_BACKLOG", 2048, "SERVER_LISTEN_BACKLOG", COUNT, AT_LEAST_ONE,
          "connections each daphne listener queues before the kernel makes clients retry (Twisted's own default "
          "is 50, too few for a reconnect storm); applied under every command (`make run`, "
          "`python -m symphainy.serve`, `daphne`, `runserver`) to endpoints that do not set `backlog=` "
          "themselves; the kernel caps it at `net.core.somaxconn`"),
        S("SERVER_HEARTBEAT_INTERVAL", timedelta(seconds=2), "SERVER_HEARTBEAT_INTERVAL_SECONDS", SECONDS, POSITIVE,
          "how often each serving process renews its lease (one small write) and looks for processes whose lease "
          "ran out"),
        S("SERVER_STALE_AFTER", timedelta(seconds=6), "SERVER_STALE_AFTER_SECONDS", SECONDS, POSITIVE,
          "a process whose lease is older is taken for dead: its connection records are swept, its sockets no "
          "longer count against the per-user cap and its running executions run again, within this plus one `SERVER_HEARTBEAT_INTERVAL` of its death; must exceed "
          "`SERVER_HEARTBEAT_INTERVAL`", longer_than="SERVER_HEARTBEAT_INTERVAL"),
        S("RUNTIME_SWEEP_INTERVAL", timedelta(seconds=30), "RUNTIME_SWEEP_INTERVAL_SECONDS", SECONDS, POSITIVE,
          "how often each serving process runs the other clean-ups (sessions past an expiry, expired idempotency "
          "records and tokens, old events)"),
        S("SHUTDOWN_DRAIN_WINDOW", timedelta(seconds=5), "SHUTDOWN_DRAIN_WINDOW_SECONDS", SECONDS, ZERO_OR_MORE,
          "on SIGTERM or SIGINT, a process closes its sockets with 1012 spread over this window, so that their "
          "clients do not all come back in the same instant ([deployment.md](deployment.md#restarts-and-deploys))"),
        S("SHUTDOWN_TIMEOUT", timedelta(seconds=25), "SHUTDOWN_TIMEOUT_SECONDS", SECONDS, POSITIVE,
          "a stopping process exits within this: what runs past it is handed over (executions run again "
          "elsewhere); keep it below systemd's `TimeoutStopSec` and Kubernetes' `terminationGracePeriodSeconds`; "
          "must exceed `SHUTDOWN_DRAIN_WINDOW`", longer_than="SHUTDOWN_DRAIN_WINDOW"),
    ),
    "Session event log": (
        S("EVENT_RETENTION", timedelta(minutes=10), "EVENT_RETENTION_SECONDS", SECONDS, POSITIVE,
          "what a reconnecting socket can resume from: events younger than this, or the last "
          "`EVENT_RETENTION_COUNT` of a session, whichever keeps more"),
        S("EVENT_RETENTION_COUNT", 1000, "EVENT_RETENTION_COUNT", COUNT, AT_LEAST_ONE,
          "the events of a session kept whatever their age (see `EVENT_RETENTION`)"),
        S("EVENT_POLL_INTERVAL", timedelta(milliseconds=200), "EVENT_POLL_INTERVAL_MS", MILLISECONDS, POSITIVE,
          "how often each process's tail reads the session event log at the latest (PostgreSQL's NOTIFY and "
          "local commits wake it sooner)"),
        S("EVENT_WATCH_INTERVAL", timedelta(milliseconds=10), "EVENT_WATCH_INTERVAL_MS", MILLISECONDS, ZERO_OR_MORE,
          "on the embedded SQLite, how often each serving process looks for another process's commit to the "
          "event log (a version read, then the log's newest id only when it changed); `0` leaves it to the poll"),
        S("EVENT_GAP_WAIT", timedelta(seconds=5), "EVENT_GAP_WAIT_SECONDS", SECONDS, POSITIVE,
          "how long a tail reads a hole (an id committed out of order, PostgreSQL) again at every wake-up; "
          "after that, once a second until EVENT_LATE_WAIT"),
        S("EVENT_LATE_WAIT", timedelta(minutes=10), "EVENT_LATE_WAIT_SECONDS", SECONDS, POSITIVE,
          "how long a tail keeps reading an old hole once a second before taking it for a rolled-back insert "
          "(a row of a transaction slower than this is left to the sockets' periodic re-check)",
          longer_than="EVENT_GAP_WAIT"),
        S("REPLAY_MAX_EVENTS", 1000, "REPLAY_MAX_EVENTS", COUNT, AT_LEAST_ONE,
          "the most events a resume (`?since=`) is sent; a larger gap is answered `recovered: false` without "
          "reading it"),
        S("REPLAY_MAX_BYTES", 1024 * 1024, "REPLAY_MAX_BYTES", BYTES, AT_LEAST_ONE,
          "the most bytes of frames a resume is sent (measured in the database before the events are read); "
          "a larger gap is answered `recovered: false`"),
        S("EVENT_RESULT_MAX_BYTES", 16 * 1024, "EVENT_RESULT_MAX_BYTES", BYTES, AT_LEAST_ZERO,
          "the largest execution `result` an `execution.*` event carries; a larger one is left out "
          "(`result_omitted: true`: read it with `GET /api/execution/{id}/status`)"),
    ),
    "Intents, executions and state": (
        S("STATE_BACKEND", "database", "STATE_BACKEND", TEXT, A_STATE_BACKEND,
          "session state store: `database`, `redis` or `memory` (tests)"),
        S("STATE_MAX_BYTES", 256 * 1024, "STATE_MAX_BYTES", BYTES, AT_LEAST_ONE,
          "largest session state document; beyond it, 413. Agent conversations obey it too (least recently "
          "used dropped first)"),
        S("INTENT_HANDLERS", {"echo": "sessions_runtime.handlers.echo", "batch": "sessions_runtime.handlers.batch"},
          None, MAPPING, HANDLER_PATHS, "intent type → dotted path of its handler ([extending.md](extending.md))"),
        S("INTENT_SUBMIT_RATE", "60/min", "INTENT_SUBMIT_RATE", RATE, A_RATE,
          "per user: intent submissions (REST and socket); over it, 429 with `Retry-After`"),
        S("IDEMPOTENCY_TTL", timedelta(hours=24), "IDEMPOTENCY_TTL_SECONDS", SECONDS, POSITIVE,
          "how long an `Idempotency-Key` answers with its first response"),
        S("IDEMPOTENCY_LOCK_TTL", timedelta(seconds=30), None, SECONDS, POSITIVE,
          "how long a request with an `Idempotency-Key` holds the key while it is being recorded (another with "
          "the same key meanwhile gets 409); released when it answers, so this bounds only a crashed one's hold"),
        S("EXECUTION_RUNNER", "asyncio", "EXECUTION_RUNNER", TEXT, AN_EXECUTION_RUNNER,
          "`asyncio` runs executions in the serving process; `worker` sends them to "
          "`manage.py runworker symphainy.executions`"),
        S("MAX_RUNNING_EXECUTIONS_PER_USER", 10, "MAX_RUNNING_EXECUTIONS_PER_USER", COUNT, AT_LEAST_ONE,
          "executions of one user created or running at once; over it, 429 with `Retry-After`"),
        S("EXECUTION_STALE_AFTER", timedelta(seconds=60), "EXECUTION_STALE_AFTER_SECONDS", SECONDS, POSITIVE,
          "a running execution without a heartbeat for this long is run again"),
        S("EXECUTION_MAX_ATTEMPTS", 3, "EXECUTION_MAX_ATTEMPTS", COUNT, AT_LEAST_ONE,
          "how many times an execution is run at most"),
        S("BATCH_ITEM_DELAY", 0.05, "BATCH_ITEM_DELAY_SECONDS", DECIMAL_SECONDS, DELAY,
          "the `batch` handler's default per-item delay"),
    ),
    "Agents": (
        S("AGENT_HANDLER", "sessions_runtime.agents.echo_agent", "AGENT_HANDLER", DOTTED_PATH, AN_AGENT_PATH,
          "the agent that answers `agent.message` (the built-in echo agent by default)"),
        S("AGENT_TOKEN_DELAY", 0.02, "AGENT_TOKEN_DELAY_SECONDS", DECIMAL_SECONDS, DELAY,
          "the echo agent's pause between tokens"),
        S("AGENT_MESSAGE_MAX_CHARS", 16_000, "AGENT_MESSAGE_MAX_CHARS", CHARACTERS, AT_LEAST_ONE,
          "the longest `agent.message` text; longer is an `invalid_request` error frame"),
        S("AGENT_HISTORY_MAX_TURNS", 50, "AGENT_HISTORY_MAX_TURNS", COUNT, AT_LEAST_ONE,
          "turns of a conversation kept in session state, the agent's `history` (the oldest dropped first)"),
        S("AGENT_ANSWERS_PER_USER", 3, "AGENT_ANSWERS_PER_USER", COUNT, AT_LEAST_ONE,
          "answers of one user in flight at once, on all processes; over it, `agent.message` gets a "
          "`too_many_answers` error frame and nothing starts"),
        S("AGENT_ANSWERS_PER_PROCESS", 100, "AGENT_ANSWERS_PER_PROCESS", COUNT, AT_LEAST_ONE,
          "answers one server process runs at once; over it, `too_many_answers` too. Each token sent to a socket "
          "costs the event loop ~90 µs (bench/README.md): 100 answers of 50 tokens/s to one socket each keep it "
          "about half busy, 200 would fill it"),
        S("AGENT_SNAPSHOT_INTERVAL", timedelta(milliseconds=40), "AGENT_SNAPSHOT_INTERVAL_MS", MILLISECONDS, POSITIVE,
          "how often the text so far of an answer in flight is written where every process reads it (what a late "
          "or reconnecting socket's `agent.snapshot` holds): one write per answer per interval, never one per token"),
        S("AGENT_ANSWER_LEASE", timedelta(seconds=5), "AGENT_ANSWER_LEASE_SECONDS", SECONDS, POSITIVE,
          "the running process renews its answers' lease twice a second; an answer whose lease ran out (its "
          "process died) is failed as `interrupted` by the next sweep (`SERVER_HEARTBEAT_INTERVAL`)"),
    ),
    "Operations": (
        S("AUDIT_RETENTION", timedelta(days=90), "AUDIT_RETENTION_SECONDS", SECONDS, POSITIVE,
          "what `manage.py audit prune` keeps"),
        S("METRICS_ALLOWED_NETWORKS", ["127.0.0.0/8", "::1/128"], "METRICS_ALLOWED_NETWORKS", NETWORKS,
          A_NETWORK_LIST, "who may read `/metrics` by address: a client in these networks (behind the proxy: the "
          "address nginx saw)"),
        S("METRICS_TOKEN", None, "METRICS_TOKEN", TEXT, NOT_EMPTY_OR_UNSET,
          "who may read `/metrics` by token: `Authorization: Bearer <METRICS_TOKEN>`"),
        S("DEMO_EMAIL", "demo@symphainy.local", "DEMO_EMAIL", TEXT, NOT_EMPTY,
          "the demo user `seed_demo` creates"),
        S("DEMO_PASSWORD", "symphainy-demo-pass", "DEMO_PASSWORD", TEXT, NOT_EMPTY,
          "the demo user's password"),
    ),
}
del S

SETTINGS: tuple[Setting, ...] = tuple(setting for section in SECTIONS.values() for setting in section)
# Kept for code that only needs the defaults.
DEFAULTS: dict[str, Any] = {setting.key: setting.default for setting in SETTINGS}


# --- The project's other environment variables ------------------------------------------
@dataclass(frozen=True)
class Variable:
    """An environment variable outside the product's table (Django's, the libraries', the
    deployment's), declared here so that docs/configuration.md lists every one. `default`
    is the text that stands for it when unset (None: unset); `read_by` says who reads it."""

    name: str
    default: str | None
    what: str
    read_by: str = "symphainy/settings.py"


V = Variable
PROJECT_VARIABLES: dict[str, tuple[Variable, ...]] = {
    "Keys and tokens": (
        V("SECRET_KEY", None, "Django's signing key, and the tokens' unless `JWT_SIGNING_KEY` is set. Unset: a public "
          "development key, on which with `DEBUG=0` the service refuses to start (`core.E001`) unless "
          "`SYMPHAINY_INSECURE_DEV_KEY=1`"),
        V("JWT_SIGNING_KEY", None, "HS256 key for the tokens (unset: `SECRET_KEY`); shorter than 32 bytes is "
          "refused at start (`core.E002`)"),
        V("JWT_ISSUER", "symphainy", "the `iss` claim issued and required"),
        V("ACCESS_TOKEN_LIFETIME_SECONDS", "900", "access token lifetime"),
        V("REFRESH_TOKEN_LIFETIME_SECONDS", "86400",
          "refresh token lifetime (never past the session's absolute expiry)"),
    ),
    "Database": (
        V("DATABASE_URL", None, "e.g. `postgres://user@host:5432/db` (psycopg 3); unset: SQLite in `SQLITE_PATH`"),
        V("SQLITE_PATH", "db.sqlite3", "the embedded database"),
        V("SQLITE_TEST_PATH", "var/test.sqlite3", "the tests' own embedded database"),
        V("DATABASE_POOL_SIZE", "20", "psycopg pool per process (PostgreSQL); processes × size must stay under "
          "`max_connections`; `0` turns it off"),
        V("DATABASE_POOL_TIMEOUT_SECONDS", "10", "how long a request waits for a pooled connection"),
    ),
    "Redis": (
        V("REDIS_URL", None, "e.g. `redis://127.0.0.1:6379/0`: channels-redis layer and the shared cache "
          "(throttles), and the `redis` state backend; `rediss://` for TLS. Other redis-py connection options "
          "can go in its query string (e.g. `?ssl_cert_reqs=none` to skip certificate checks). Unset: in-memory "
          "layer, local cache"),
        V("REDIS_SENTINELS", None, "e.g. `10.0.0.1:26379,10.0.0.2:26379` (`[ipv6]:port` too): all three Redis "
          "clients ask these sentinels for the current master. Without `REDIS_SENTINEL_MASTER`, or without "
          "`REDIS_URL`, refused at start (`core.E009`); an entry that is not `host:port` too (`core.E010`)"),
        V("REDIS_SENTINEL_MASTER", None, "the name of the service the sentinels monitor (`core.E009` without "
          "`REDIS_SENTINELS`)"),
        V("REDIS_SENTINEL_PASSWORD", None, "the sentinels' own password (`requirepass` of the sentinels), if they "
          "have one; the master's comes from `REDIS_URL`"),
        V("REDIS_TLS_CA_FILE", None, "PEM file of the CA(s) that signed Redis' (and the sentinels') certificates, "
          "passed to redis-py as `ssl_ca_certs` (unset: the system's CAs); refused at start if it is not a "
          "readable file or `REDIS_URL` is not `rediss://` (`core.E011`)"),
        V("REDIS_MAX_CONNECTIONS", "1000", "channels-redis connection pool"),
        V("CHANNEL_LAYER_CAPACITY", "200", "channels-redis per-channel queue"),
        V("REDIS_PREFIX", "symphainy", "key prefix of the channel layer and the cache"),
    ),
    "HTTP": (
        V("DEBUG", "0", "Django's debug mode; never in production"),
        V("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]", "also the service's own origin for sockets: an `Origin` with "
          "one of these hosts and the request's own scheme and port (from `Host`, and `X-Forwarded-Proto` with "
          "`SECURE_PROXY_SSL_HEADER=1`)"),
        V("CORS_ALLOWED_ORIGINS", None, "frontends on other origins, e.g. `https://app.example.com`: allowed by "
          "CORS (django-cors-headers, for `/api/` and `/openapi.json`) and by the socket's origin check alike, "
          "as exact origins (scheme, host, port; a default port may be left out)"),
        V("WS_ALLOWED_ORIGINS", None, "the older name of `CORS_ALLOWED_ORIGINS`, read when that is unset"),
        V("CSRF_TRUSTED_ORIGINS", None, "origins trusted for the admin's forms over HTTPS"),
        V("TRUSTED_PROXY_COUNT", "0", "how many proxies' `X-Forwarded-For` entries to trust for client addresses"),
        V("THROTTLE_LOGIN_ADDRESS", "30/min", "login attempts per client address"),
        V("THROTTLE_REGISTER_ADDRESS", "10/min", "registrations per client address"),
        V("THROTTLE_REFRESH_ADDRESS", "60/min", "token refreshes per client address"),
        V("SECURE_SSL_REDIRECT", "0", "redirect HTTP to HTTPS; with the other `SECURE_*` settings, "
          "`CSRF_TRUSTED_ORIGINS` and a real `SECRET_KEY`, `manage.py check --deploy` is clean"),
        V("SECURE_HSTS_SECONDS", "0", "the `Strict-Transport-Security` max-age"),
        V("SECURE_HSTS_INCLUDE_SUBDOMAINS", "0", "HSTS for subdomains too"),
        V("SECURE_HSTS_PRELOAD", "0", "HSTS preload"),
        V("SECURE_COOKIES", "0", "session and CSRF cookies over HTTPS only"),
        V("SECURE_PROXY_SSL_HEADER", "0", "`1`: trust the proxy's `X-Forwarded-Proto: https` (needed behind a proxy "
          "that terminates TLS: the socket's origin check compares schemes)"),
    ),
    "Logs": (
        V("LOG_FORMAT", "plain", "`json` for one JSON object per line, with the request id; tokens are redacted "
          "either way"),
        V("LOG_LEVEL", "INFO", "the root logger's level"),
    ),
    "Deployment and tests": (
        V("PROMETHEUS_MULTIPROC_DIR", None, "a directory shared by every process of a machine: `/metrics` then "
          "reports their sum (the deploy layout sets it; prometheus_client reads it too)"),
        V("GUNICORN_BIND", "127.0.0.1:8000", "where gunicorn listens", read_by="`deploy/gunicorn.conf.py`"),
        V("GUNICORN_WORKERS", None, "gunicorn workers (unset: one per core)", read_by="`deploy/gunicorn.conf.py`"),
        V("GUNICORN_TIMEOUT", "30", "gunicorn's worker timeout", read_by="`deploy/gunicorn.conf.py`"),
        V("TRUSTED_LB_NETWORKS", None, "load balancers in front of nginx, e.g. `10.0.0.0/24,10.0.1.5`: the "
          "rendered site takes the client's address from their `X-Forwarded-For` (as `--trusted-lb`)",
          read_by="`deploy/render.py`"),
        V("SEED_DEMO", None, "`make run` seeds the demo user on SQLite; with `DATABASE_URL` only when "
          "`SEED_DEMO=1`", read_by="the `Makefile`"),
        V("SYMPHAINY_REQUIRE_SERVICES", "0", "`1`: the test suite fails, never skips, when PostgreSQL or Redis is "
          "not configured or not reachable"),
    ),
}
del V


# --- The lazy object --------------------------------------------------------------------
class RuntimeSettings:
    """Attribute access to `settings.SYMPHAINY` with defaults, cached until settings change."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Unknown Symphainy setting: {name}")
        if name not in self._cache:
            user = getattr(settings, "SYMPHAINY", {})
            self._cache[name] = user.get(name, DEFAULTS[name])
        return self._cache[name]

    def reload(self) -> None:
        self._cache.clear()


runtime_settings = RuntimeSettings()


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == "SYMPHAINY":
        runtime_settings.reload()


setting_changed.connect(_reload)
