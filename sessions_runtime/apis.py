"""The runtime-session endpoints: create, read, list, end."""

from __future__ import annotations

import json

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from sessions_runtime.intents import IntentAction, session_intent_build
from sessions_runtime.models import ActorType, EndReason, SessionStatus
from sessions_runtime.selectors import session_get_for_actor, session_list_for_actor
from sessions_runtime.services import Actor, session_create, session_end
from symphainy.api import client_address
from symphainy.conf import runtime_settings


class SessionOutputSerializer(serializers.Serializer):
    session_id = serializers.UUIDField(source="pk")
    user_id = serializers.UUIDField()
    tenant_id = serializers.UUIDField()
    status = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    last_seen_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    idle_expires_at = serializers.DateTimeField()
    ended_at = serializers.DateTimeField(allow_null=True)
    end_reason = serializers.SerializerMethodField()
    metadata = serializers.JSONField()
    connections = serializers.IntegerField(source="connection_count", default=0)

    def get_status(self, session) -> str:
        return session.effective_status()

    def get_end_reason(self, session) -> str | None:
        if session.end_reason:
            return session.end_reason
        return session.expiry_reason() if session.effective_status() == SessionStatus.EXPIRED else None


def _actor(request: Request) -> Actor:
    return Actor(type=ActorType.USER, user=request.user, client_address=client_address(request))


class SessionCreateApi(APIView):
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "SessionCreateInput"

        metadata = serializers.DictField(required=False, default=dict)

        def validate_metadata(self, value: dict) -> dict:
            limit = runtime_settings.SESSION_METADATA_MAX_BYTES
            if len(json.dumps(value, separators=(",", ":"))) > limit:
                raise serializers.ValidationError(f"Metadata must be at most {limit} bytes of JSON.")
            return value

    @extend_schema(request=InputSerializer, responses={201: SessionOutputSerializer})
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        ctx = request.auth
        intent = session_intent_build(
            user=ctx.user,
            tenant=ctx.tenant,
            role=ctx.role,
            action=IntentAction.API_CREATE,
            metadata=data.validated_data["metadata"],
        )
        session = session_create(intent=intent, actor=_actor(request))
        return Response(SessionOutputSerializer(session).data, status=201)


class SessionDetailApi(APIView):
    @extend_schema(responses={200: SessionOutputSerializer})
    def get(self, request: Request, session_id: str) -> Response:
        session = session_get_for_actor(actor=request.auth, session_id=session_id)
        return Response(SessionOutputSerializer(session).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, session_id: str) -> Response:
        session = session_get_for_actor(actor=request.auth, session_id=session_id)
        own = session.user_id == request.user.pk
        session_end(
            session_id=session.pk,
            reason=EndReason.DELETED if own else EndReason.ADMIN,
            actor=_actor(request),
        )
        return Response(status=204)


class SessionListApi(APIView):
    class FilterSerializer(serializers.Serializer):
        class Meta:
            ref_name = "SessionListFilter"

        status = serializers.ChoiceField(choices=SessionStatus.choices, required=False)
        scope = serializers.ChoiceField(choices=["mine", "tenant"], required=False, default="mine")

    @extend_schema(
        parameters=[
            OpenApiParameter("status", OpenApiTypes.STR, enum=SessionStatus.values),
            OpenApiParameter("scope", OpenApiTypes.STR, enum=["mine", "tenant"]),
            OpenApiParameter("page", OpenApiTypes.INT),
            OpenApiParameter("page_size", OpenApiTypes.INT),
        ],
        responses={200: SessionOutputSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        sessions = session_list_for_actor(
            actor=request.auth,
            status=filters.validated_data.get("status"),
            tenant_scope=filters.validated_data["scope"] == "tenant",
        )
        paginator = self.pagination_class() if self.pagination_class else None
        page = paginator.paginate_queryset(sessions, request, view=self)
        return paginator.get_paginated_response(SessionOutputSerializer(page, many=True).data)
