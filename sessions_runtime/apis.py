"""The runtime-session endpoints: create, read, list, end."""

from __future__ import annotations

import json
import re

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.conf import runtime_settings
from core.drf import Pagination, RegexTextField, TextField, error_responses, page_of
from core.exceptions import InvalidRequest, PreconditionRequired
from core.ids import MAX_ID_LENGTH
from core.refresh_cookie import refresh_cookie_clear, refresh_cookie_cleared_header
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


# The errors each kind of operation can answer with (core.drf.error_responses).
_READ = (401, 404, 503)  # an authenticated read of one thing by id
_WRITE = (400, 401, 403, 404, 409, 413, 415, 503)  # an authenticated write with a JSON body, by id


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

    @extend_schema(
        request=InputSerializer,
        responses={201: SessionOutputSerializer, **error_responses(400, 401, 403, 413, 415, 429, 503)},
    )
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
    @extend_schema(responses={200: SessionOutputSerializer, **error_responses(*_READ)})
    def get(self, request: Request, session_id: str) -> Response:
        session = session_get_for_caller(caller=request.auth, session_id=session_id)
        return Response(SessionOutputSerializer(session).data)

    @extend_schema(responses={204: None, **error_responses(401, 403, 404, 503)},
                   parameters=[refresh_cookie_cleared_header()])
    def delete(self, request: Request, session_id: str) -> Response:
        session = session_get_for_caller(caller=request.auth, session_id=session_id)
        own = session.user_id == request.user.pk
        session_end(
            session_id=session.pk,
            reason=EndReason.DELETED if own else EndReason.ADMIN,
            caller=request.auth,
        )
        response = Response(status=204)
        if session.pk == request.auth.session_id:  # the caller's own: the cookie a browser holds is this one's
            refresh_cookie_clear(response)
        return response


class SessionListApi(APIView):
    class FilterSerializer(serializers.Serializer):
        class Meta:
            ref_name = "SessionListFilter"

        status = serializers.ChoiceField(choices=SessionStatus.choices, required=False)
        scope = serializers.ChoiceField(choices=["mine", "tenant"], required=False, default="mine")

    @extend_schema(
        parameters=[
            OpenApiParameter("status", OpenApiTypes.STR, enum=SessionStatus.values),
            OpenApiParameter(
                "scope", OpenApiTypes.STR, enum=["mine", "tenant"],
                description="`tenant`: every session of the caller's tenant (needs the admin permission).",
            ),
            *Pagination.schema_parameters(),
        ],
        responses={
            200: page_of(SessionOutputSerializer, "SessionPage"),
            **error_responses(400, 401, 403, 503),
            **error_responses(404),  # a page past the last
        },
    )
    def get(self, request: Request) -> Response:
        # A plain dict, not the QueryDict: DRF reads a blank form value (`?status=`) as
        # absent, and a blank filter is as invalid as any other unknown value.
        filters = self.FilterSerializer(data=request.query_params.dict())
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
IF_MATCH_PATTERN = r'^(W/)?("[0-9]{1,12}"|[0-9]{1,12})$'
IF_MATCH = OpenApiParameter(
    "If-Match", {"type": "string", "pattern": IF_MATCH_PATTERN}, OpenApiParameter.HEADER, required=True,
    description='The version the write is based on: `3`, `"3"` or `W/"3"` (the ETag of a read).',
)


def _if_match(request: Request) -> int:
    """The version named by If-Match: `3`, `"3"` or `W/"3"` (IF_MATCH_PATTERN; the
    whitespace around a header's value is not part of it)."""
    raw = request.headers.get("If-Match")
    if raw is None:
        raise PreconditionRequired()
    if not re.fullmatch(IF_MATCH_PATTERN, raw.strip(" \t")):
        raise InvalidRequest("If-Match must be the state's version number.", details={"If-Match": raw[:64]})
    return int(re.sub("[^0-9]", "", raw))


def _state_response(document: StateDocument, *, status: int = 200) -> Response:
    return Response(
        {"version": document.version, "data": document.data}, status=status, headers={"ETag": f'"{document.version}"'}
    )


class WholeBodyPatchSchema(AutoSchema):
    """This PATCH's body is the whole input (its `data` is what merges, RFC 7386), not the
    partial update drf-spectacular assumes for every PATCH."""

    def _get_request_for_media_type(self, serializer, direction="request"):  # type: ignore[no-untyped-def]
        method, self.method = self.method, "PUT" if self.method == "PATCH" else self.method
        try:
            return super()._get_request_for_media_type(serializer, direction)
        finally:
            self.method = method


class SessionStateApi(APIView):
    schema = WholeBodyPatchSchema()
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "SessionStateInput"

        data = serializers.DictField()

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "SessionState"

        version = serializers.IntegerField()
        data = serializers.DictField()

    @extend_schema(responses={200: OutputSerializer, **error_responses(*_READ)})
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
        responses={200: OutputSerializer, **error_responses(*_WRITE, 412, 428)},
        parameters=[IF_MATCH],
    )
    def put(self, request: Request, session_id: str) -> Response:
        return self._write(request, session_id, merge=False)

    @extend_schema(
        request=InputSerializer,
        responses={200: OutputSerializer, **error_responses(*_WRITE, 412, 428)},
        parameters=[IF_MATCH],
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


_PAGES = Pagination.schema_parameters()


class SessionConversationsApi(APIView):
    @extend_schema(
        operation_id="api_session_conversations_list",
        parameters=_PAGES,
        responses={
            200: page_of(ConversationSummarySerializer, "ConversationSummaryPage"),
            **error_responses(400, *_READ),  # 404 also for a page past the last
        },
    )
    def get(self, request: Request, session_id: str) -> Response:
        """The session's agent conversations, those with answers in flight first, then the
        most recently used; readable like the session's state."""
        session = session_get_for_caller(caller=request.auth, session_id=session_id)
        paginator = Pagination()
        page = paginator.paginate_queryset(conversations_of(session=session), request, view=self)
        return paginator.get_paginated_response(page)


class SessionConversationApi(APIView):
    @extend_schema(parameters=_PAGES, responses={200: ConversationPageSerializer, **error_responses(400, *_READ)})
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
class IntentTypeField(TextField):
    """An intent type; the domain refuses one with no handler (`runner`), the schema lists them."""


class IntentTypeSchema(OpenApiSerializerFieldExtension):
    """The registered intent types as the field's enum, read when the schema is built."""

    target_class = IntentTypeField
    priority = 1  # before core.drf.TextFieldSchema

    def map_serializer_field(self, auto_schema, direction):  # type: ignore[no-untyped-def]
        return {"type": "string", "enum": sorted(runtime_settings.INTENT_HANDLERS)}


class IntentSubmitApi(APIView):
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "IntentSubmitInput"

        session_id = TextField(max_length=MAX_ID_LENGTH)
        intent_type = IntentTypeField(max_length=64)
        parameters = serializers.DictField(required=False, default=dict)
        idempotency_key = TextField(max_length=MAX_IDEMPOTENCY_KEY_LENGTH, required=False)

    @extend_schema(
        request=InputSerializer,
        responses={202: SubmissionSerializer, **error_responses(*_WRITE, 422, 429)},
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
    @extend_schema(responses={200: ExecutionSerializer, **error_responses(*_READ)})
    def get(self, request: Request, execution_id: str) -> Response:
        return Response(execution_payload(_execution(request, execution_id)))


class ExecutionCancelApi(APIView):
    @extend_schema(request=None, responses={202: ExecutionSerializer, **error_responses(401, 403, 404, 409, 503)})
    def post(self, request: Request, execution_id: str) -> Response:
        execution = execution_cancel(execution=_execution(request, execution_id), caller=request.auth)
        return Response(execution_payload(execution), status=202)


# --- File references -------------------------------------------------------------------
class FileReferenceSerializer(serializers.Serializer):
    class Meta:
        ref_name = "FileReference"

    file_id = serializers.UUIDField(source="pk", read_only=True)
    session_id = serializers.UUIDField(read_only=True)
    name = TextField(max_length=255)
    size = serializers.IntegerField(min_value=0, max_value=2**62)
    sha256 = RegexTextField(r"^[0-9a-f]{64}$", max_length=64)
    content_type = RegexTextField(r"^[\w.+-]+/[\w.+-]+$", max_length=127)
    location = TextField(max_length=1024)
    created_at = serializers.DateTimeField(read_only=True)


class SessionFilesApi(APIView):
    @extend_schema(responses={200: FileReferenceSerializer(many=True), **error_responses(*_READ)})
    def get(self, request: Request, session_id: str) -> Response:
        session = session_get_for_caller(caller=request.auth, session_id=session_id)
        return Response(FileReferenceSerializer(file_references_for_session(session=session), many=True).data)

    @extend_schema(
        request=FileReferenceSerializer, responses={201: FileReferenceSerializer, **error_responses(*_WRITE)}
    )
    def post(self, request: Request, session_id: str) -> Response:
        session = session_get_for_caller(caller=request.auth, session_id=session_id)
        access_require_write(caller=request.auth, owner_id=session.user_id, what=FILE_ADD)
        data = FileReferenceSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        reference = file_reference_add(caller=request.auth, session=session, **data.validated_data)
        return Response(FileReferenceSerializer(reference).data, status=201)


class SessionFileDetailApi(APIView):
    @extend_schema(responses={200: FileReferenceSerializer, **error_responses(*_READ)})
    def get(self, request: Request, session_id: str, file_id: str) -> Response:
        session = session_get_for_caller(caller=request.auth, session_id=session_id)
        return Response(FileReferenceSerializer(file_reference_get(session=session, file_id=file_id)).data)
