"""The wire shapes the domain answers with, written once: the API returns them, the events
carry them, and the OpenAPI schema is generated from the same classes, so none can drift."""

from __future__ import annotations

from rest_framework import serializers

from sessions_runtime.models import ExecutionStatus


class SubmissionSerializer(serializers.Serializer):
    """What `POST /api/intent/submit` (and `intent.accepted`) answers; kept with the
    idempotency key as the first answer."""

    class Meta:
        ref_name = "IntentAccepted"

    execution_id = serializers.UUIDField(source="pk")
    intent_id = serializers.UUIDField()
    status = serializers.CharField()
    created_at = serializers.DateTimeField()


class ExecutionSerializer(serializers.Serializer):
    """An execution's status document, as `GET /api/execution/{id}/status` and the
    `execution.*` events show it."""

    class Meta:
        ref_name = "Execution"

    execution_id = serializers.UUIDField(source="pk")
    intent_id = serializers.UUIDField()
    intent_type = serializers.CharField()
    session_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=ExecutionStatus.choices)
    progress = serializers.DictField()
    result = serializers.JSONField(allow_null=True)
    error = serializers.JSONField(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
