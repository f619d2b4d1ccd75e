"""MAX_REQUEST_BYTES holds before a body is read (Content-Length) and while it is read
(chunked), over a real daphne process and on the WSGI path; chunked bodies are parsed."""

from __future__ import annotations

import io
import json
import socket

import pytest

from tests import factories
from tests.live import running

pytestmark = pytest.mark.django_db(transaction=True)


def _raw_exchange(port: int, head: bytes, body: bytes = b"") -> tuple[int, dict]:
    with socket.create_connection(("127.0.0.1", port), timeout=15) as conn:
        conn.sendall(head + body)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.split(b"\r\n\r\n", 1)[1] or b"null")


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


def _chunked(payload: bytes, size: int = 1000) -> bytes:
    parts = [b"%x\r\n%s\r\n" % (len(payload[i:i + size]), payload[i:i + size]) for i in range(0, len(payload), size)]
    return b"".join(parts) + b"0\r\n\r\n"


@pytest.mark.server
def test_daphne_refuses_a_large_content_length_before_the_body_and_parses_chunked_bodies(tmp_path):
    user = factories.make_user()
    with running(tmp_path, MAX_REQUEST_BYTES="4096") as server:
        # 200 MiB announced, not one body byte sent: answered at once.
        head = (b"POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 209715200\r\n\r\n")
        status, body = _raw_exchange(server.port, head)
        assert status == 413 and body["error"] == "request_too_large", body

        login = json.dumps({"email": user.email, "password": factories.PASSWORD}).encode()
        chunked_head = (b"POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        status, body = _raw_exchange(server.port, chunked_head, _chunked(login, size=7))
        assert status == 200, body
        assert body["user_id"] == str(user.pk)

        too_big = json.dumps({"email": user.email, "password": "x" * 10_000}).encode()
        status, body = _raw_exchange(server.port, chunked_head, _chunked(too_big))
        assert status == 413 and body["error"] == "request_too_large", body


def test_wsgi_path_refuses_on_content_length_and_reads_chunked_bodies(client, settings):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "MAX_REQUEST_BYTES": 4096}
    user = factories.make_user()
    response = client.post("/api/auth/login", data=b"{}", content_type="application/json", CONTENT_LENGTH="209715200")
    assert response.status_code == 413 and response.json()["error"] == "request_too_large"

    login = json.dumps({"email": user.email, "password": factories.PASSWORD}).encode()
    chunked = {"CONTENT_LENGTH": "", "CONTENT_TYPE": "application/json", "HTTP_TRANSFER_ENCODING": "chunked"}
    response = client.generic("POST", "/api/auth/login", b"", **chunked, **{"wsgi.input": io.BytesIO(login)})
    assert response.status_code == 200, response.content

    too_big = json.dumps({"email": user.email, "password": "x" * 10_000}).encode()
    response = client.generic("POST", "/api/auth/login", b"", **chunked, **{"wsgi.input": io.BytesIO(too_big)})
    assert response.status_code == 413

    response = client.post("/api/auth/login", data=b"{}", content_type="application/json", CONTENT_LENGTH="-1")
    assert response.status_code == 400
