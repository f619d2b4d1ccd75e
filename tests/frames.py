"""Every frame a test's socket exchanges, checked against /asyncapi.json's document.

`frames_checked` (autouse, tests/conftest.py) wraps the consumer's one `send_frame` and the
frame table's handlers: each server frame, and each client frame the server accepted
(a refused one may be malformed on purpose), is validated against its message's schema;
the test fails at teardown with the frame and the error. What a test's client receives from
a server in its own process (tests/live.py, through `tests.sockets.connect`) is checked too,
and so is what the console's socket sends and receives in a real browser (tests/browser/).
"""

from __future__ import annotations

import functools
import json
import uuid
from datetime import datetime
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7
from websockets.asyncio.client import ClientConnection

DOCUMENT = "urn:symphainy:asyncapi"
FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    # Hand-written: jsonschema checks date-time only with rfc3339-validator installed; the
    # server writes `datetime.isoformat()` with an offset, which this reads back.
    return not isinstance(value, str) or datetime.fromisoformat(value).tzinfo is not None


@FORMATS.checks("uuid", raises=ValueError)
def _uuid(value: object) -> bool:
    return not isinstance(value, str) or str(uuid.UUID(value)) == value.lower()


@functools.cache
def _document() -> dict[str, Any]:
    from realtime.asyncapi import asyncapi_document

    return asyncapi_document()


@functools.cache
def _validator(schema_name: str) -> jsonschema.Draft7Validator:
    """A validator of one schema of the document, its `$ref`s resolved within the document."""
    registry = Registry().with_resource(DOCUMENT, Resource.from_contents(_document(), default_specification=DRAFT7))
    return jsonschema.Draft7Validator(
        {"$ref": f"{DOCUMENT}#/components/schemas/{schema_name}"}, registry=registry, format_checker=FORMATS
    )


def frame_problem(frame: Any, *, direction: str) -> str | None:
    """Why `frame` (sent by the `client` or the `server`) is not a message of the document, or None."""
    from realtime.asyncapi import message_name

    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        return "not an object with a string `type`"
    name = message_name(frame["type"], frame.get("event_type"))
    message = _document()["components"]["messages"].get(name)
    if message is None or message["x-direction"] != direction:
        return f"no {direction} message `{name}` in the document"
    validator = _validator(message["title"])
    if validator.is_valid(frame):
        return None
    error = jsonschema.exceptions.best_match(validator.iter_errors(frame))
    return f"{error.message} at {'/'.join(map(str, error.absolute_path)) or 'the frame'} ({message['title']})"


# The running test's log (set by the fixture), for the frames of real clients.
current: "FrameLog | None" = None


class CheckedConnection(ClientConnection):
    """A real client's connection whose received text frames go to the running test's log."""

    async def recv(self, decode: bool | None = None) -> Any:
        data = await super().recv(decode)
        text_check(data, direction="server")
        return data


def text_check(data: Any, *, direction: str) -> None:
    """Check a text frame a real client sent or received, in the running test's log."""
    if current is None or not isinstance(data, str):
        return
    try:
        frame = json.loads(data)
    except ValueError:
        frame = data
    current.check(frame, direction=direction)


class FrameLog:
    """The frames of one test that do not validate."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.checked = 0

    def check(self, frame: Any, *, direction: str) -> None:
        self.checked += 1
        problem = frame_problem(frame, direction=direction)
        if problem is not None:
            self.problems.append(f"{direction} frame {json.dumps(frame, default=str)[:2000]}: {problem}")

    def install(self, monkeypatch: Any) -> None:
        """Check what the in-process consumer sends, and the client frames its table accepts."""
        from realtime import protocol
        from realtime.consumers import RuntimeAgentConsumer

        send_frame = RuntimeAgentConsumer.send_frame

        async def checked_send(consumer: Any, frame: dict[str, Any]) -> None:
            self.check(frame, direction="server")
            await send_frame(consumer, frame)

        monkeypatch.setattr(RuntimeAgentConsumer, "send_frame", checked_send)
        for frame_type, handler in list(protocol.FRAMES.items()):
            monkeypatch.setitem(protocol.FRAMES, frame_type, self._accepting(handler))

    def _accepting(self, handler: Any) -> Any:
        async def checked(socket: Any, message: dict[str, Any]) -> None:
            await handler(socket, message)  # refused (it raised): may be malformed on purpose
            self.check(message, direction="client")

        return checked
