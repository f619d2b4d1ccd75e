"""The runtime-session endpoints: create, read, list, end."""

from __future__ import annotations

import json

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.conf import runtime_settings
from core.drf import Pagination
from core.exceptions import InvalidRequest, PreconditionRequired
from core.ids import MAX_ID_LENGTH
from sessions_runtime.agents import conversation_of, conversations_of
from sessions_runtime.executions import execution_cancel, execution_get_for_caller, execution_payload
from sessions_runtime.files import file_reference_add, file_reference_get, file_references_for_session
from sessions_runtime.models import EndReason, SessionStatus
from sessions_runtime.selectors import (
    FILE_ADD,
    STATE_WRITE,
    access_require_write,
    session_get_for_caller,
    session_list_for_caller,
)
from sessions_runtime.serializers import ExecutionSerializer, SubmissionSerializer
from sessions_runtime.services import session_create, session_end
from sessions_runtime.session_intents import SessionIntentAction, session_intent_build
from sessions_runtime.state import StateDocument
from sessions_runtime.state_writes import session_state_read, session_state_write
from sessions_runtime.submission import MAX_IDEMPOTENCY_KEY_LENGTH, intent_submit


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
        caller = request.auth
        intent = session_intent_build(
            user_id=caller.user_id,
            tenant_id=caller.tenant_id,
            role=caller.role,
            action=SessionIntentAction.API_CREATE,
            metadata=data.validated_data["metadata"],
        )
        session = session_create(intent=intent, caller=caller)
        return Response(SessionOutputSerializer(session).data, status=201)


class SessionDetailApi(APIView):
    @extend_schema(responses={200: SessionOutputSerializer})
    def get(self, request: Request, session_id: str) -> Response:
        session = session_get_for_caller(caller=request.auth, session_id=session_id)
        return Response(SessionOutputSerializer(session).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, session_id: str) -> Response:
        session = session_get_for_caller(caller=request.auth, session_id=session_id)
        own = session.user_id == request.user.pk
        session_end(
            session_id=session.pk,
            reason=EndReason.DELETED if own else EndReason.ADMIN,
            caller=request.auth,
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
        sessions = session_list_for_caller(
            caller=request.auth,
            status=filters.validated_data.get("status"),
            tenant_scope=filters.validated_data["scope"] == "tenant",
        )
        paginator = Pagination()
        page = paginator.paginate_queryset(sessions, request, view=self)
        return paginator.get_paginated_response(SessionOutputSerializer(page, many=True).data)


# --- Session state ----------------------------------------------------------------------
def _if_match(request: Request) -> int:
    """The version named by If-Match: `3`, `"3"` or `W/"3"`."""
    raw = request.headers.get("If-Match")
    if raw is None:
        raise PreconditionRequired()
    value = raw.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"')
    if not (value.isascii() and value.isdigit()) or len(value) > 12:  # not "²", which int() refuses
        raise InvalidRequest("If-Match must be the state's version number.", details={"If-Match": raw[:64]})
    return int(value)


def _state_response(document: StateDocument, *, status: int = 200) -> Response:
    return Response(
        {"version": document.version, "data": document.data}, status=status, headers={"ETag": f'"{document.version}"'}
    )


class SessionStateApi(APIView):
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "SessionStateInput"

        data = serializers.DictField()

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "SessionState"

        version = serializers.IntegerField()
        data = serializers.DictField()

    @extend_schema(responses={200: OutputSerializer})
    def get(self, request: Request, session_id: str) -> Response:
        session = session_get_for_caller(caller=request.auth, session_id=session_id)
        return _state_response(session_state_read(session=session))

    def _write(self, request: Request, session_id: str, *, merge: bool) -> Response:
        session = session_get_for_caller(caller=request.auth, session_id=session_id)
        # Refused before the body and If-Match are read, so a viewer learns 403 first.
        access_require_write(caller=request.auth, owner_id=session.user_id, what=STATE_WRITE)
        expected = _if_match(request)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        document = session_state_write(
            caller=request.auth, session=session, data=data.validated_data["data"], expected_version=expected, merge=merge
        )
        return _state_response(document)

    @extend_schema(
        request=InputSerializer,
        responses={200: OutputSerializer},
        parameters=[OpenApiParameter("If-Match", OpenApiTypes.STR, OpenApiParameter.HEADER, required=True)],
    )
    def put(self, request: Request, session_id: str) -> Response:
        return self._write(request, session_id, merge=False)

    @extend_schema(
        request=InputSerializer,
        responses={200: OutputSerializer},
        parameters=[OpenApiParameter("If-Match", OpenApiTypes.STR, OpenApiParameter.HEADER, required=True)],
        description="JSON merge patch (RFC 7386) of `data`: objects merge, null removes a member.",
    )
    def patch(self, request: Request, session_id: str) -> Response:
        return self._write(request, session_id, merge=True)


# --- Agent conversations ----------------------------------------------------------------
class ConversationSummarySerializer(serializers.Serializer):
    class Meta:
        ref_name = "ConversationSummary"

    conversation_id = serializers.CharField()
    turns = serializers.IntegerField()
    last_at = serializers.FloatField(allow_null=True, help_text="Unix time of the last turn")
    answers_in_flight = serializers.IntegerField()


class ConversationTurnSerializer(serializers.Serializer):
    class Meta:
        ref_name = "ConversationTurn"

    role = serializers.ChoiceField(choices=["user", "agent"])
    text = serializers.CharField()
    at = serializers.FloatField(help_text="Unix time")
    message_id = serializers.CharField(required=False, help_text="the answer's message id (agent turns)")
    cancelled = serializers.BooleanField(required=False, help_text="the answer was cancelled: the text so far")


class AnswerInFlightSerializer(serializers.Serializer):
    class Meta:
        ref_name = "AnswerInFlight"

    message_id = serializers.CharField()
    question = serializers.CharField()
    text = serializers.CharField(help_text="the text so far, as of its last write")
    next_index = serializers.IntegerField()


class ConversationPageSerializer(serializers.Serializer):
    class Meta:
        ref_name = "ConversationPage"

    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = ConversationTurnSerializer(many=True)
    in_flight = AnswerInFlightSerializer(many=True)


_PAGES = [OpenApiParameter("page", OpenApiTypes.INT), OpenApiParameter("page_size", OpenApiTypes.INT)]


class SessionConversationsApi(APIView):
    @extend_schema(parameters=_PAGES, responses={200: ConversationSummarySerializer(many=True)})
    def get(self, request: Request, session_id: str) -> Response:
        """The session's agent conversations, those with answers in flight first, then the
        most recently used; readable like the session's state."""
        session = session_get_for_caller(caller=request.auth, session_id=session_id)
        paginator = Pagination()
        page = paginator.paginate_queryset(conversations_of(session=session), request, view=self)
        return paginator.get_paginated_response(page)


class SessionConversationApi(APIView):
    @extend_schema(parameters=_PAGES, responses={200: ConversationPageSerializer})
    def get(self, request: Request, session_id: str, conversation_id: str) -> Response:
        """A conversation's turns, oldest first, paginated, and its answers in flight (the
        socket's `agent.snapshot` and tokens carry them on)."""
        session = session_get_for_caller(caller=request.auth, session_id=session_id)
        turns, in_flight = conversation_of(session=session, conversation_id=conversation_id)
        paginator = Pagination()
        page = paginator.paginate_queryset(turns, request, view=self)
        response = paginator.get_paginated_response(page)
        response.data["in_flight"] = in_flight
        return response


# --- Intents and executions ------------------------------------------------------------
class IntentSubmitApi(APIView):
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "IntentSubmitInput"

        session_id = serializers.CharField(max_length=MAX_ID_LENGTH)
        intent_type = serializers.CharField(max_length=64)
        parameters = serializers.DictField(required=False, default=dict)
        idempotency_key = serializers.CharField(max_length=MAX_IDEMPOTENCY_KEY_LENGTH, required=False)

    @extend_schema(
        request=InputSerializer,
        responses={202: SubmissionSerializer},
        parameters=[OpenApiParameter("Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER)],
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        header_key = request.headers.get("Idempotency-Key")
        body_key = data.validated_data.get("idempotency_key")
        if header_key is not None and body_key is not None and header_key != body_key:
            raise InvalidRequest("Idempotency-Key and idempotency_key differ.")
        submission = intent_submit(
            caller=request.auth,
            session_id=data.validated_data["session_id"],
            intent_type=data.validated_data["intent_type"],
            parameters=data.validated_data["parameters"],
            idempotency_key=header_key if header_key is not None else body_key,
        )
        headers = {"Idempotent-Replayed": "true"} if submission.replayed else {}
        return Response(submission.response, status=202, headers=headers)


def _execution(request: Request, execution_id: str):
    return execution_get_for_caller(caller=request.auth, execution_id=execution_id)


class ExecutionStatusApi(APIView):
    @extend_schema(responses={200: ExecutionSerializer})
    def get(self, request: Request, execution_id: str) -> Response:
        return Response(execution_payload(_execution(request, execution_id)))


class ExecutionCancelApi(APIView):
    @extend_schema(request=None, responses={202: ExecutionSerializer})
    def post(self, request: Request, execution_id: str) -> Response:
        execution = execution_cancel(execution=_execution(request, execution_id), caller=request.auth)
        return Response(execution_payload(execution), status=202)


# --- File references -------------------------------------------------------------------
class FileReferenceSerializer(serializers.Serializer):
    class Meta:
        ref_name = "FileReference"

    file_id = serializers.UUIDField(source="pk", read_only=True)
    session_id = serializers.UUIDField(read_only=True)
    name = serializers.CharField(max_length=255)
    size = serializers.IntegerField(min_value=0, max_value=2**62)
    sha256 = serializers.RegexField(r"^[0-9a-f]{64}$", max_length=64)
    content_type = serializers.RegexField(r"^[\w.+-]+/[\w.+-]+$", max_length=127)
    location = serializers.CharField(max_length=1024)
    created_at = serializers.DateTimeField(read_only=True)


class SessionFilesApi(APIView):
    @extend_schema(responses={200: FileReferenceSerializer(many=True)})
    def get(self, request: Request, session_id: str) -> Response:
        session = session_get_for_caller(caller=request.auth, session_id=session_id)
        return Response(FileReferenceSerializer(file_references_for_session(session=session), many=True).data)

    @extend_schema(request=FileReferenceSerializer, responses={201: FileReferenceSerializer})
    def post(self, request: Request, session_id: str) -> Response:
        session = session_get_for_caller(caller=request.auth, session_id=session_id)
        access_require_write(caller=request.auth, owner_id=session.user_id, what=FILE_ADD)
        data = FileReferenceSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        reference = file_reference_add(caller=request.auth, session=session, **data.validated_data)
        return Response(FileReferenceSerializer(reference).data, status=201)


class SessionFileDetailApi(APIView):
    @extend_schema(responses={200: FileReferenceSerializer})
    def get(self, request: Request, session_id: str, file_id: str) -> Response:
        session = session_get_for_caller(caller=request.auth, session_id=session_id)
        return Response(FileReferenceSerializer(file_reference_get(session=session, file_id=file_id)).data)
