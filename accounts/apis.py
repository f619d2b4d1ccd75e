"""The auth endpoints: register, login, refresh, logout, logout-all, me."""

from __future__ import annotations

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import Tenant, User, normalize_email
from accounts.refresh_cookie import (
    REFRESH_HEADER,
    REFRESH_HEADER_VALUE,
    refresh_cookie_has,
    refresh_cookie_read,
    refresh_cookie_requested,
    refresh_cookie_set,
)
from accounts.services import LoginResult, auth_login, auth_logout, auth_logout_all, user_register
from accounts.throttles import (
    LoginAddressThrottle,
    RefreshAddressThrottle,
    RegisterAddressThrottle,
)
from accounts.tokens import MAX_TOKEN_LENGTH, TokenPair, token_refresh
from core.conf import runtime_settings
from core.drf import EmailTextField, FlagField, TextField, client_address, error_responses
from core.exceptions import RegistrationClosed
from core.refresh_cookie import refresh_cookie_clear, refresh_cookie_cleared_header, refresh_cookie_enabled

_COOKIE = "the refresh cookie (named by AUTH_REFRESH_COOKIE_NAME; docs/security.md#the-refresh-cookie)"


class TokenOutputSerializer(serializers.Serializer):
    access_token = serializers.CharField()
    refresh_token = serializers.CharField(
        required=False, help_text=f"Absent when it was set as {_COOKIE} instead: scripts never see it."
    )
    token_type = serializers.CharField(default="Bearer")
    expires_in = serializers.IntegerField(help_text="Seconds until the access token expires.")


class LoginOutputSerializer(TokenOutputSerializer):
    session_id = serializers.UUIDField()
    session_expires_at = serializers.DateTimeField()
    user_id = serializers.UUIDField()
    tenant_id = serializers.UUIDField()
    roles = serializers.ListField(child=serializers.CharField())
    permissions = serializers.ListField(child=serializers.CharField())
    refresh_cookie = serializers.BooleanField(
        required=False,
        help_text="Present when the request sent `refresh_cookie`: whether the refresh token was set as the "
        "cookie (then `refresh_token` is absent). False when AUTH_REFRESH_COOKIE is off.",
    )


def _tokens_body(tokens: TokenPair, *, cookie: bool = False) -> dict:
    body = {"access_token": tokens.access_token, "token_type": "Bearer", "expires_in": tokens.expires_in}
    return body if cookie else {**body, "refresh_token": tokens.refresh_token}


def login_response(result: LoginResult, *, refresh_cookie: bool | None, status: int = 200) -> Response:
    """The login body; with `refresh_cookie` asked and the feature on, the refresh token
    goes into the cookie instead of the body."""
    cookie = bool(refresh_cookie) and refresh_cookie_enabled()
    body = {
        **_tokens_body(result.tokens, cookie=cookie),
        "session_id": result.session.pk,
        "session_expires_at": result.session.expires_at,
        "user_id": result.user.pk,
        "tenant_id": result.membership.tenant_id,
        "roles": [result.membership.role],
        "permissions": list(result.membership.permissions),
    }
    if refresh_cookie is not None:
        body["refresh_cookie"] = cookie
    response = Response(LoginOutputSerializer(body).data, status=status)
    if cookie:
        refresh_cookie_set(response, result.tokens)
    return response


def _refresh_cookie_input() -> FlagField:
    return FlagField(
        required=False,
        help_text=f"`true`: set the refresh token as {_COOKIE} instead of returning it, when the server has "
        "AUTH_REFRESH_COOKIE on (the answer's `refresh_cookie` says whether it did).",
    )


def _set_cookie(status: int) -> OpenApiParameter:
    """The refresh cookie in the schema: what a `status` answer sets."""
    return OpenApiParameter(
        "Set-Cookie", str, OpenApiParameter.HEADER, response=[status],
        description=f"Sets {_COOKIE}: HttpOnly; Secure; SameSite=Strict; Path=/api/auth/refresh; Max-Age=the "
        "refresh token's remaining life. Only when the request asked for it (and AUTH_REFRESH_COOKIE is on).",
    )


_CLEAR_COOKIE = refresh_cookie_cleared_header()


class PasswordField(TextField):
    """A new password; AUTH_PASSWORD_VALIDATORS judge it (`RegisterApi.InputSerializer.validate`)
    and the schema states them (accounts.schema.PasswordSchema)."""


class RegisterApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []
    throttle_classes = [RegisterAddressThrottle]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "RegisterInput"

        email = EmailTextField(max_length=254)
        password = PasswordField(max_length=128, trim_whitespace=False)
        name = TextField(max_length=150, required=False, allow_blank=True, default="")
        tenant_name = TextField(max_length=200, required=False, allow_blank=True, default="")
        refresh_cookie = _refresh_cookie_input()

        def validate_email(self, value: str) -> str:
            return normalize_email(value)

        def validate(self, attrs: dict) -> dict:
            candidate = User(email=attrs["email"], name=attrs.get("name", ""))
            try:
                validate_password(attrs["password"], user=candidate)
            except DjangoValidationError as exc:
                raise serializers.ValidationError({"password": list(exc.messages)}) from None
            return attrs

    @method_decorator(never_cache)  # tokens: no cache or proxy may keep them (Cache-Control: no-store)
    @extend_schema(
        request=InputSerializer,
        responses={201: LoginOutputSerializer, **error_responses(400, 403, 409, 413, 415, 429, 503)},
        parameters=[_set_cookie(201)],
        auth=[],
    )
    def post(self, request: Request) -> Response:
        # Self-registration only; operators create accounts with manage.py whatever this says.
        if not runtime_settings.REGISTRATION_OPEN:
            raise RegistrationClosed()
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        result = user_register(
            email=data.validated_data["email"],
            password=data.validated_data["password"],
            name=data.validated_data["name"],
            tenant_name=data.validated_data["tenant_name"] or None,
            client_address=client_address(request),
        )
        return login_response(result, refresh_cookie=data.validated_data.get("refresh_cookie"), status=201)


class LoginApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []
    throttle_classes = [LoginAddressThrottle]  # and the per-account-and-address lockout, in auth_login

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "LoginInput"

        email = TextField(max_length=254)
        password = TextField(max_length=128, trim_whitespace=False)
        tenant_id = serializers.UUIDField(required=False, allow_null=True, default=None)
        refresh_cookie = _refresh_cookie_input()

    @method_decorator(never_cache)  # tokens: no cache or proxy may keep them (Cache-Control: no-store)
    @extend_schema(
        request=InputSerializer,
        responses={200: LoginOutputSerializer, **error_responses(400, 401, 403, 413, 415, 429, 503)},
        parameters=[_set_cookie(200)],
        auth=[],
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        asked = data.validated_data.pop("refresh_cookie", None)
        result = auth_login(**data.validated_data, client_address=client_address(request))
        return login_response(result, refresh_cookie=asked)


class RefreshApi(APIView):
    """The refresh token from the body, or, with `X-Symphainy-Refresh: cookie`, from the
    refresh cookie (then the new one goes back into the cookie, never into the body)."""

    permission_classes = [AllowAny]
    authentication_classes: list = []
    throttle_classes = [RefreshAddressThrottle]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "RefreshInput"

        refresh_token = TextField(
            max_length=MAX_TOKEN_LENGTH, required=False,
            help_text=f"Required, unless the request sends `{REFRESH_HEADER}: {REFRESH_HEADER_VALUE}` to use "
            f"{_COOKIE}; then it must be absent.",
        )

        def validate(self, attrs: dict) -> dict:
            if self.context["from_cookie"] and "refresh_token" in attrs:
                raise serializers.ValidationError(
                    {"refresh_token": [f"Send it in the body or use {REFRESH_HEADER}, not both."]}
                )
            if not self.context["cookie_possible"] and "refresh_token" not in attrs:
                raise serializers.ValidationError({"refresh_token": [self.fields["refresh_token"].error_messages["required"]]})
            return attrs

    @method_decorator(never_cache)  # tokens: no cache or proxy may keep them (Cache-Control: no-store)
    @extend_schema(
        request=InputSerializer,
        responses={200: TokenOutputSerializer, **error_responses(400, 401, 403, 413, 415, 429, 503)},
        parameters=[
            OpenApiParameter(
                REFRESH_HEADER, str, OpenApiParameter.HEADER, enum=[REFRESH_HEADER_VALUE],
                description=f"`{REFRESH_HEADER_VALUE}`: refresh from {_COOKIE}, without `refresh_token` in the body; "
                "the answer then sets the rotated cookie and carries no `refresh_token`. Without the header a "
                "request that carries the cookie and no `refresh_token` is 403 `csrf_failed`, as is one whose "
                "`Origin` or `Sec-Fetch-Site` is not this service's own origin; with it and no cookie, 401 "
                "`not_authenticated`. A 401 on this path clears the cookie.",
            ),
            OpenApiParameter(
                "symphainy_refresh", str, OpenApiParameter.COOKIE,
                description=f"T{_COOKIE[1:]}, read only with the header.",
            ),
            _set_cookie(200),
        ],
        auth=[],
    )
    def post(self, request: Request) -> Response:
        from_cookie = refresh_cookie_requested(request)
        # Without the token in the body, the cookie is the only candidate: a request that
        # carries it without the header is answered 403 by `refresh_cookie_read`, not 400.
        cookie_possible = from_cookie or (refresh_cookie_enabled() and refresh_cookie_has(request))
        data = self.InputSerializer(
            data=request.data, context={"from_cookie": from_cookie, "cookie_possible": cookie_possible}
        )
        data.is_valid(raise_exception=True)
        raw = data.validated_data.get("refresh_token") or refresh_cookie_read(request)
        tokens = token_refresh(
            raw=raw,
            client_address=client_address(request),
            user_agent=request.META.get("HTTP_USER_AGENT", ""),
        )
        response = Response(TokenOutputSerializer(_tokens_body(tokens, cookie=from_cookie)).data)
        if from_cookie:
            refresh_cookie_set(response, tokens)
        return response

    def handle_exception(self, exc: Exception) -> Response:
        response = super().handle_exception(exc)
        if response.status_code == 401 and refresh_cookie_requested(self.request):
            refresh_cookie_clear(response)  # the cookie's token is dead (used, expired, its session ended)
        return response


class LogoutApi(APIView):
    @extend_schema(request=None, responses={204: None, **error_responses(401, 503)}, parameters=[_CLEAR_COOKIE])
    def post(self, request: Request) -> Response:
        auth_logout(caller=request.auth)
        response = Response(status=204)
        refresh_cookie_clear(response)
        return response


class LogoutAllApi(APIView):
    @extend_schema(request=None, responses={204: None, **error_responses(401, 503)}, parameters=[_CLEAR_COOKIE])
    def post(self, request: Request) -> Response:
        auth_logout_all(caller=request.auth)
        response = Response(status=204)
        refresh_cookie_clear(response)
        return response


class MeApi(APIView):
    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "Me"

        user_id = serializers.UUIDField(source="user.pk")
        email = serializers.EmailField(source="user.email")
        name = serializers.CharField(source="user.name")
        tenant_id = serializers.UUIDField(source="caller.tenant_id")
        tenant_name = serializers.CharField(help_text="The tenant's display name, for showing instead of its id.")
        roles = serializers.ListField(source="caller.roles", child=serializers.CharField())
        permissions = serializers.ListField(source="caller.permissions", child=serializers.CharField())
        session_id = serializers.UUIDField(source="caller.session_id")

    @extend_schema(responses={200: OutputSerializer, **error_responses(401, 503)})
    def get(self, request: Request) -> Response:
        # One more query than the token check: the session snapshot carries ids, not names.
        tenant_name = Tenant.objects.filter(pk=request.auth.tenant_id).values_list("name", flat=True).first() or ""
        return Response(
            self.OutputSerializer({"user": request.user, "caller": request.auth, "tenant_name": tenant_name}).data
        )
