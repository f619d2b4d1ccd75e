"""DRF authentication through the one token check."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions as drf
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from accounts.tokens import access_token_authenticate
from core.caller import Caller
from core.drf import client_address
from core.exceptions import InvalidToken, ServiceError
from sessions_runtime.services import session_touch


class ServiceAuthenticationFailed(drf.AuthenticationFailed):
    """Carries a domain error through DRF's authentication step.

    DRF only marks a request anonymous for `APIException`s raised while authenticating,
    so the domain error rides inside one; the exception handler answers with the domain
    error itself.
    """

    def __init__(self, error: ServiceError) -> None:
        self.error = error
        super().__init__(error.message, error.code)


class SessionTokenAuthentication(BaseAuthentication):
    """`Authorization: Bearer <access token>`; sets `request.user` to the `User` and
    `request.auth` to the `Caller` the token stands for."""

    keyword = b"bearer"

    def authenticate(self, request: Request) -> tuple[Any, Caller] | None:
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword:
            return None
        try:
            if len(header) != 2:
                raise InvalidToken("The Authorization header must be 'Bearer <token>'.")
            try:
                raw = header[1].decode("ascii")
            except UnicodeDecodeError:
                raise InvalidToken() from None
            session, caller = access_token_authenticate(raw, client_address=client_address(request))
        except ServiceError as error:
            raise ServiceAuthenticationFailed(error) from error
        session_touch(session_id=session.pk, last_seen_at=session.last_seen_at)
        return session.user, caller

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'
