"""The socket protocol as an AsyncAPI 3.0 document, served at /asyncapi.json.

Built, never written by hand, from the frame table (`realtime.protocol.FRAMES`), the frames'
schemas beside it (`realtime.schema`), the REST serializers' schemas as drf-spectacular
generates them for /openapi.json (the execution's status document, the intent's answer)
and the domain's error codes; the close codes ride along as `x-close-codes`. How messages
are named: docs/protocol.md#the-protocol-in-machine-form.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import condition, require_safe
from drf_spectacular.generators import SchemaGenerator

from core import exceptions
from realtime.protocol import FRAMES
from realtime.schema import CLIENT_FRAMES, EVENTS, OPENAPI_COMPONENTS, SERVER_FRAMES, close_codes, event_frame

CHANNEL = "runtimeAgent"
ADDRESS = "/api/runtime/agent"
SUBPROTOCOL = "symphainy.v1"
RUNTIME_EVENT = "runtime_event"
# The document changes only with a deploy; clients and caches may keep it this long.
CACHE_SECONDS = 3600


def openapi_document() -> dict[str, Any]:
    """/openapi.json as drf-spectacular generates it (the view serves the same document)."""
    return SchemaGenerator().get_schema(request=None, public=True)


def message_name(frame_type: str, event_type: str | None = None) -> str:
    """A message's name in the document: a frame's `type`; `runtime_event.<event_type>` for events."""
    return f"{RUNTIME_EVENT}.{event_type}" if frame_type == RUNTIME_EVENT else frame_type


def _json_schema(node: Any) -> Any:
    """An OpenAPI 3.0 schema as JSON Schema: `nullable: true` becomes a `null` type."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _json_schema(value) for key, value in node.items()}
    if node.pop("nullable", False) and "type" in node:
        node["type"] = [node["type"], "null"]
    return node


def _refs(node: Any) -> set[str]:
    if isinstance(node, list):
        return set().union(*(_refs(item) for item in node)) if node else set()
    if not isinstance(node, dict):
        return set()
    found = {node["$ref"].rsplit("/", 1)[-1]} if isinstance(node.get("$ref"), str) else set()
    return found.union(*(_refs(value) for value in node.values()))


def _rest_schemas() -> dict[str, dict[str, Any]]:
    """The REST components the frames use, with what they refer to, as JSON Schema."""
    components = openapi_document()["components"]["schemas"]
    wanted, todo = {}, list(OPENAPI_COMPONENTS)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted[name] = _json_schema(components[name])
            todo += sorted(_refs(wanted[name]))
    return wanted


def error_codes() -> list[str]:
    """Every `error` an error frame may carry: the codes of the domain's errors."""
    codes, todo = set(), [exceptions.ServiceError]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls.__module__ == exceptions.__name__:  # the declared ones, not a test's own
            codes.add(cls.code)
    return sorted(codes)


def _schemas() -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """components.schemas, and each message's schema name (client's, server's)."""
    schemas: dict[str, Any] = _rest_schemas()
    execution = copy.deepcopy(schemas["Execution"])
    execution["properties"]["result_omitted"] = {
        "const": True, "description": "The result exceeded EVENT_RESULT_MAX_BYTES: read it with the status GET."}
    schemas["ExecutionEvent"] = {**execution, "title": "ExecutionEvent", "additionalProperties": False,
                                 "description": "An execution's status document as its events carry it."}
    schemas["ErrorCode"] = {"type": "string", "enum": error_codes(), "description": "An error's machine code."}
    accepted = copy.deepcopy(SERVER_FRAMES["intent.accepted"])
    rest = schemas["IntentAccepted"]
    accepted["properties"] = {"type": accepted["properties"]["type"], **rest["properties"],
                              "replayed": accepted["properties"]["replayed"]}
    accepted["required"] = ["type", *rest["required"], "replayed"]
    server_frames = {**SERVER_FRAMES, "intent.accepted": accepted}
    server_frames |= {message_name(RUNTIME_EVENT, kind): event_frame(kind) for kind in EVENTS}

    def named(frames: dict[str, dict[str, Any]]) -> dict[str, str]:
        names = {}
        for message, schema in frames.items():
            schema = copy.deepcopy(schema)
            data = schema["properties"].get("data")
            if data and "title" in data:  # an event's data is a type of its own
                schemas.setdefault(data["title"], data)
                schema["properties"]["data"] = {"$ref": f"#/components/schemas/{data['title']}"}
            if schema["title"] in schemas:
                raise ValueError(f"two schemas named {schema['title']}")
            schemas[schema["title"]] = schema
            names[message] = schema["title"]
        return names

    client, server = named(CLIENT_FRAMES), named(server_frames)
    schemas["ClientFrame"] = {"oneOf": [{"$ref": f"#/components/schemas/{n}"} for n in client.values()]}
    schemas["ServerFrame"] = {"oneOf": [{"$ref": f"#/components/schemas/{n}"} for n in server.values()]}
    return schemas, client, server


def _message(name: str, schema_name: str, schema: dict[str, Any], direction: str) -> dict[str, Any]:
    return {"name": name, "title": schema_name, "summary": schema.get("description", ""),
            "contentType": "application/json", "payload": {"$ref": f"#/components/schemas/{schema_name}"},
            "x-direction": direction}


def _query() -> dict[str, Any]:
    text = {"type": "string"}
    return {"type": "object", "properties": {
        "session_id": {"type": "string", "format": "uuid", "description": "Another session of the token's user."},
        "since": {"type": "integer", "minimum": 0, "description": "Resume after this `seq`."},
        "epoch": {**text, "description": "The epoch of `since`."},
        "access_token": {**text, "description": "Legacy; prefer the `bearer.<token>` subprotocol."},
        "session_token": {**text, "description": "Legacy; prefer the `bearer.<token>` subprotocol."},
    }}


@functools.cache
def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of /api/runtime/agent (generated once per process)."""
    unlisted = set(FRAMES) ^ set(CLIENT_FRAMES)
    if unlisted:
        raise LookupError(f"client frame types without a schema, or schemas without a type: {sorted(unlisted)}")
    schemas, client, server = _schemas()
    messages = {name: _message(name, title, schemas[title], "client") for name, title in client.items()}
    messages |= {name: _message(name, title, schemas[title], "server") for name, title in server.items()}
    channel_ref = {"$ref": f"#/channels/{CHANNEL}"}

    def refs(names: dict[str, str]) -> list[dict[str, str]]:
        return [{"$ref": f"#/channels/{CHANNEL}/messages/{name}"} for name in names]

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": f"{settings.SPECTACULAR_SETTINGS['TITLE']}: the socket",
            "version": settings.SPECTACULAR_SETTINGS["VERSION"],
            "description": "One WebSocket per session and tab: JSON text frames both ways. Generated by the "
                           "server from its frame table; the HTTP API is /openapi.json. Close codes, with what a "
                           "client does on each, are in `x-close-codes`. See docs/protocol.md.",
        },
        "defaultContentType": "application/json",
        "channels": {CHANNEL: {
            "address": ADDRESS,
            "title": "The runtime socket",
            "description": f"Credentials as the subprotocols `[\"{SUBPROTOCOL}\", \"bearer.<access_token>\"]` "
                           f"(the server selects `{SUBPROTOCOL}`) or an `Authorization: Bearer` header; an "
                           "`Origin` header is required. The first frame is `session.ready`.",
            "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in messages},
            "bindings": {"ws": {"bindingVersion": "0.1.0", "method": "GET", "query": _query()}},
        }},
        "operations": {
            "sendServerFrames": {"action": "send", "channel": channel_ref, "title": "What the server sends",
                                 "messages": refs(server)},
            "receiveClientFrames": {"action": "receive", "channel": channel_ref, "title": "What a client may send",
                                    "messages": refs(client)},
        },
        "components": {"schemas": schemas, "messages": messages},
        "x-subprotocol": SUBPROTOCOL,
        "x-close-codes": close_codes(),
    }


def asyncapi_json() -> str:
    """The document as served and committed (clients/js/schema/asyncapi.json)."""
    return json.dumps(asyncapi_document(), indent=2, ensure_ascii=False) + "\n"


@functools.cache
def _etag() -> str:
    return hashlib.sha256(asyncapi_json().encode()).hexdigest()[:32]


@require_safe
@condition(etag_func=lambda request: _etag())
def asyncapi_view(request: HttpRequest) -> HttpResponse:
    """GET /asyncapi.json: public, like /openapi.json, and cacheable (with an ETag)."""
    response = HttpResponse(asyncapi_json(), content_type="application/json")
    response["Cache-Control"] = f"public, max-age={CACHE_SECONDS}"
    return response
