"""The WSGI bridge: Django's handler behind the ASGI server, bodies of any size both ways."""

from __future__ import annotations

import hashlib

import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator

from communication.bridge import BUFFER, WSGIBridge


def echo_app(environ, start_response):
    """Answers the SHA-256 of the request body, then ``?size=N`` bytes in 64 KiB chunks."""
    body = environ["wsgi.input"].read()
    size = int(environ["QUERY_STRING"].partition("=")[2] or 0)
    start_response(
        "201 Created",
        [("Content-Type", "text/plain"), ("X-Digest", hashlib.sha256(body).hexdigest())],
    )
    chunk = b"x" * 65536
    return [chunk[: min(65536, size - i)] for i in range(0, size, 65536)]


def failing_app(environ, start_response):
    raise RuntimeError("boom")


def _scope(query: bytes = b"", length: int = 0) -> dict:
    return {
        "type": "http",
        "method": "POST",
        "path": "/echo",
        "raw_path": b"/echo",
        "query_string": query,
        "root_path": "",
        "http_version": "1.1",
        "headers": [(b"content-length", str(length).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }


async def _exchange(app, body_parts: list[bytes], query: bytes = b""):
    communicator = ApplicationCommunicator(app, _scope(query, sum(map(len, body_parts))))
    for i, part in enumerate(body_parts):
        await communicator.send_input(
            {"type": "http.request", "body": part, "more_body": i < len(body_parts) - 1}
        )
    messages = [await communicator.receive_output(10)]
    while messages[-1]["type"] == "http.response.start" or messages[-1].get("more_body"):
        messages.append(await communicator.receive_output(10))
    await communicator.wait(10)
    return messages


@pytest.mark.parametrize(
    ("parts", "size", "body_messages"),
    [
        ([b"small"], 10, 1),  # all in one piece each way
        ([b"a" * 100_000] * 8, 0, 1),  # a body past BUFFER is streamed to the thread
        ([b""], 3 * BUFFER + 5, None),  # an answer past BUFFER goes out chunk by chunk
    ],
)
def test_bodies_cross_whole(parts, size, body_messages):
    app = WSGIBridge(echo_app, workers=2)
    messages = async_to_sync(_exchange)(app, parts, f"size={size}".encode())
    start, *body = messages
    assert start["type"] == "http.response.start"
    assert start["status"] == 201
    assert (
        dict(start["headers"])[b"x-digest"] == hashlib.sha256(b"".join(parts)).hexdigest().encode()
    )
    assert b"".join(m.get("body", b"") for m in body) == b"x" * size
    assert body[-1].get("more_body", False) is False
    if body_messages is not None:
        assert len(body) == body_messages
    else:
        assert len(body) > 2


def test_an_application_error_reaches_the_server():
    app = WSGIBridge(failing_app, workers=1)

    # Awaits the application itself: waiting for an answer first would sit out the whole
    # receive timeout, as no answer comes.
    async def fail() -> None:
        communicator = ApplicationCommunicator(app, _scope())
        await communicator.send_input({"type": "http.request", "body": b""})
        await communicator.wait(10)

    with pytest.raises(RuntimeError, match="boom"):
        async_to_sync(fail)()
