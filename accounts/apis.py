"""The auth endpoints: register, login, refresh, logout, logout-all, me."""

from __future__ import annotations

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import Tenant, User, normalize_email
from accounts.services import LoginResult, auth_login, auth_logout, auth_logout_all, user_register
from accounts.throttles import (
    LoginAddressThrottle,
    RefreshAddressThrottle,
    RegisterAddressThrottle,
)
from accounts.tokens import MAX_TOKEN_LENGTH, TokenPair, token_refresh
from core.conf import runtime_settings
from core.drf import EmailTextField, TextField, client_address, error_responses
from core.exceptions import RegistrationClosed


class TokenOutputSerializer(serializers.Serializer):
    access_token = serializers.CharField()
    refresh_token = serializers.CharField()
    token_type = serializers.CharField(default="Bearer")
    expires_in = serializers.IntegerField(help_text="Seconds until the access token expires.")


class LoginOutputSerializer(TokenOutputSerializer):
    session_id = serializers.UUIDField()
    session_expires_at = serializers.DateTimeField()
    user_id = serializers.UUIDField()
    tenant_id = serializers.UUIDField()
    roles = serializers.ListField(child=serializers.CharField())
    permissions = serializers.ListField(child=serializers.CharField())


def _tokens_body(tokens: TokenPair) -> dict:
    return {
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,
        "token_type": "Bearer",
        "expires_in": tokens.expires_in,
    }


def login_body(result: LoginResult) -> dict:
    return LoginOutputSerializer(
        {
            **_tokens_body(result.tokens),
            "session_id": result.session.pk,
            "session_expires_at": result.session.expires_at,
            "user_id": result.user.pk,
            "tenant_id": result.membership.tenant_id,
            "roles": [result.membership.role],
            "permissions": list(result.membership.permissions),
        }
    ).data


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
        return Response(login_body(result), status=201)


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

    @method_decorator(never_cache)  # tokens: no cache or proxy may keep them (Cache-Control: no-store)
    @extend_schema(
        request=InputSerializer,
        responses={200: LoginOutputSerializer, **error_responses(400, 401, 403, 413, 415, 429, 503)},
        auth=[],
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        result = auth_login(**data.validated_data, client_address=client_address(request))
        return Response(login_body(result))


class RefreshApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []
    throttle_classes = [RefreshAddressThrottle]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "RefreshInput"

        refresh_token = TextField(max_length=MAX_TOKEN_LENGTH)

    @method_decorator(never_cache)  # tokens: no cache or proxy may keep them (Cache-Control: no-store)
    @extend_schema(
        request=InputSerializer,
        responses={200: TokenOutputSerializer, **error_responses(400, 401, 413, 415, 429, 503)},
        auth=[],
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        tokens = token_refresh(
            raw=data.validated_data["refresh_token"],
            client_address=client_address(request),
            user_agent=request.META.get("HTTP_USER_AGENT", ""),
        )
        return Response(TokenOutputSerializer(_tokens_body(tokens)).data)


class LogoutApi(APIView):
    @extend_schema(request=None, responses={204: None, **error_responses(401, 503)})
    def post(self, request: Request) -> Response:
        auth_logout(caller=request.auth)
        return Response(status=204)


class LogoutAllApi(APIView):
    @extend_schema(request=None, responses={204: None, **error_responses(401, 503)})
    def post(self, request: Request) -> Response:
        auth_logout_all(caller=request.auth)
        return Response(status=204)


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
