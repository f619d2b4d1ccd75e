"""Every error the service can answer with, declared once, and the one body it answers with.

Each class carries its machine code, its HTTP status and its WebSocket close code. They
are translated in exactly two places: `core.http` for HTTP (DRF's exception handler, and
`error_response` for the answers Django gives outside DRF: its error pages, the CSRF
failure, the body limit, the admin's login throttle) and, for WebSocket, the consumer's
`guarded` (`realtime.consumers`). Every error body is `error_body`'s. `DEPENDENCY_ERRORS`
is what an outage looks like from inside the process; both places answer it with 503 / 1013.
"""

from __future__ import annotations

import asyncio
from enum import IntEnum
from typing import Any

from channels.exceptions import ChannelFull
from django.db import InterfaceError, OperationalError

try:  # channels-redis, the Redis cache and the Redis state backend raise redis' errors
    from redis.exceptions import RedisError
except ImportError:  # pragma: no cover - redis is a pinned dependency
    RedisError = OSError  # type: ignore[misc,assignment]

# A database, Redis or channel layer that cannot be reached, or did not answer in time.
DEPENDENCY_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    RedisError,
    ChannelFull,
    OSError,
    asyncio.TimeoutError,
)


class CloseCode(IntEnum):
    """WebSocket close codes of the public protocol."""

    NORMAL = 1000
    MESSAGE_TOO_BIG = 1009
    SERVER_ERROR = 1011
    SERVICE_RESTART = 1012  # the process is stopping: come back (elsewhere) and resume
    TRY_AGAIN_LATER = 1013
    UNAUTHENTICATED = 4401
    SESSION_NOT_FOUND = 4404
    SESSION_ENDED = 4409
    # An operator closed this one socket (the admin, `manage.py sockets disconnect`); the
    # session is still valid: reconnect with backoff and resume (ending the session, 4409,
    # is how a client is kept out).
    DISCONNECTED = 4001
    RATE_LIMITED = 4429


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """The contract's error body, `{"error", "message", "details"?}`: the only place it is built."""
    body: dict[str, Any] = {"error": code, "message": message}
    if details:
        body["details"] = details
    return body


class ServiceError(Exception):
    """Base of the domain errors. Subclasses only set the class attributes."""

    status_code: int = 400
    code: str = "invalid_request"
    default_message: str = "The request is invalid."
    close_code: CloseCode = CloseCode.SERVER_ERROR
    # Seconds a client should wait before retrying (sent as Retry-After), if it should.
    retry_after: int | None = None
    # On an open socket, whether this error closes it (True) or is answered with an
    # `error` frame while the socket stays open (False). A refused handshake always closes.
    closes_socket: bool = False

    def __init__(self, message: str | None = None, *, details: dict[str, Any] | None = None) -> None:
        self.message = message or self.default_message
        self.details = details
        super().__init__(self.message)

    def as_body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.details)


class InvalidRequest(ServiceError):
    status_code, code = 400, "invalid_request"
    default_message = "The request is invalid."


class BadRequest(InvalidRequest):
    """A request Django itself refused before any view (e.g. a disallowed Host)."""

    code, default_message = "bad_request", "Bad request."


class NotAuthenticated(ServiceError):
    status_code, code, close_code = 401, "not_authenticated", CloseCode.UNAUTHENTICATED
    default_message = "Authentication credentials were not provided."


class InvalidToken(ServiceError):
    status_code, code, close_code = 401, "invalid_token", CloseCode.UNAUTHENTICATED
    default_message = "The token is invalid or expired."


class TokenExpired(InvalidToken):
    code = "token_expired"
    default_message = "The token has expired."


class InvalidCredentials(ServiceError):
    status_code, code, close_code = 401, "invalid_credentials", CloseCode.UNAUTHENTICATED
    default_message = "Email or password is incorrect."


class SessionEnded(ServiceError):
    """The caller's own session has ended or expired: the client must log in again.
    Not to be confused with `SessionNotWritable`: a write to a session that is not active."""

    status_code, code, close_code = 401, "session_ended", CloseCode.SESSION_ENDED
    default_message = "The session has ended. Log in again."


class PermissionDenied(ServiceError):
    """The caller is known but may not do this. On an open socket it is an `error` frame and
    the socket stays open; a handshake refused for it closes with 4401 on purpose: the
    contract has no 4403, and 4401 tells a client to refresh its token (which re-reads its
    role and membership) before trying again, the right answer to a permission refusal."""

    status_code, code, close_code = 403, "permission_denied", CloseCode.UNAUTHENTICATED
    default_message = "You are not allowed to do this."


class CsrfFailed(PermissionDenied):
    """A form post without a good CSRF token (only the admin's forms are CSRF-protected)."""

    code = "csrf_failed"
    default_message = "The CSRF check failed. Reload the page and try again."


class RegistrationClosed(PermissionDenied):
    code = "registration_closed"
    default_message = "Self-registration is closed on this server; ask an administrator for an account."


class TenantAccessDenied(PermissionDenied):
    code = "tenant_access_denied"
    default_message = "You are not an active member of that tenant."


class SessionPolicyViolation(ServiceError):
    """A session intent failed validation against policy."""

    status_code, code, close_code = 403, "session_policy_violation", CloseCode.UNAUTHENTICATED
    default_message = "The session cannot be created."


class NotFound(ServiceError):
    status_code, code, close_code = 404, "not_found", CloseCode.SESSION_NOT_FOUND
    default_message = "Not found."


class Conflict(ServiceError):
    status_code, code = 409, "conflict"
    default_message = "The request conflicts with the current state."


class VersionConflict(Conflict):
    """The document changed since the version the writer read."""

    status_code, code = 412, "version_conflict"
    default_message = "The state has changed since that version; read it again."


class SessionNotWritable(Conflict):
    """A write (state, file, intent) to a session that is no longer active. Its code,
    `session_not_active`, is the public protocol's and stays."""

    code = "session_not_active"
    default_message = "The session is not active."


class IdempotencyInFlight(Conflict):
    code = "idempotency_in_flight"
    default_message = "A request with this idempotency key is still being processed."


class ExecutionFinished(Conflict):
    code = "execution_finished"
    default_message = "The execution has already finished."


class IdempotencyKeyReused(ServiceError):
    status_code, code = 422, "idempotency_key_reused"
    default_message = "This idempotency key was used with a different request."


class PreconditionRequired(ServiceError):
    status_code, code = 428, "precondition_required"
    default_message = "Send If-Match with the version you read."


class EmailTaken(Conflict):
    code = "email_taken"
    default_message = "An account with this email already exists."


class RequestTooLarge(ServiceError):
    status_code, code, close_code = 413, "request_too_large", CloseCode.MESSAGE_TOO_BIG
    default_message = "The request body is too large."
    closes_socket = True


class RateLimited(ServiceError):
    status_code, code, close_code = 429, "rate_limited", CloseCode.RATE_LIMITED
    default_message = "Too many requests."
    closes_socket = True

    def __init__(self, message: str | None = None, *, retry_after: float | None = None,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details)
        # Seconds until a retry may succeed; HTTP answers carry it as Retry-After.
        self.retry_after = retry_after


class TooManyAnswers(ServiceError):
    """Over the bound of agent answers in flight (per user or per process): an `error`
    frame, the socket stays open and nothing starts."""

    status_code, code, close_code = 429, "too_many_answers", CloseCode.RATE_LIMITED
    default_message = "Too many agent answers in flight; wait for one to finish."


class DependencyUnavailable(ServiceError):
    status_code, code, close_code = 503, "service_unavailable", CloseCode.TRY_AGAIN_LATER
    default_message = "A dependency is unavailable. Try again later."
    closes_socket = True


class Overloaded(ServiceError):
    """This process is at its bound for the work asked (e.g. concurrent password hashes)."""

    status_code, code, close_code = 503, "overloaded", CloseCode.TRY_AGAIN_LATER
    default_message = "The server is busy. Retry shortly."
    retry_after = 1
    closes_socket = True


class ServerError(ServiceError):
    status_code, code, close_code = 500, "server_error", CloseCode.SERVER_ERROR
    default_message = "Internal server error."
    closes_socket = True


class ProtocolError(ServiceError):
    """A WebSocket frame the server cannot use; answered with an `error` frame."""

    status_code, code = 400, "invalid_message"
    default_message = "The message is invalid."


class InvalidJson(ProtocolError):
    code = "invalid_json"
    default_message = "The frame is not valid JSON."


class UnknownMessageType(ProtocolError):
    code = "unknown_message_type"
    default_message = "Unknown message type."


class BinaryNotSupported(ProtocolError):
    code = "binary_not_supported"
    default_message = "Send JSON text frames; binary frames are not supported."


def error_for_client(exc: BaseException, *, generic: str) -> dict[str, str]:
    """What a client may see of a handler's or agent's exception: its type name and a
    generic message. Exception text can hold internals (paths, queries, other tenants'
    data), so it stays in the server log; only a declared `ServiceError` speaks for itself."""
    message = exc.message if isinstance(exc, ServiceError) else generic
    return {"type": type(exc).__name__, "message": message}
