"""Django's WSGI handler served to the ASGI server: one hop to a request thread per request.

Django's ASGI handler hops between the event loop and a thread for every sync middleware and the
view; a2wsgi's bridge hops once per request but then blocks its thread on the loop again for each
piece of the body it reads and each message it sends (start, every chunk, the end). On a small
API call those round trips cost the web process more CPU than Django's whole middleware stack.
Here the loop reads the request body before the hop (up to ``BUFFER``; a larger one is streamed
to the thread as a2wsgi does), and the thread gathers the answer and hands it back with its
return value (again up to ``BUFFER``; a larger or streaming answer goes out chunk by chunk).
The environ is a2wsgi's, so Django sees the same request either way.
"""

from __future__ import annotations

import asyncio
import contextvars
import io
from concurrent.futures import ThreadPoolExecutor

from a2wsgi.wsgi import Body, build_environ
from a2wsgi.wsgi_typing import Environ

# Request and response bodies up to this size cross between loop and thread in one piece.
BUFFER = 256 * 1024


class _RestOfBody(Body):
    """a2wsgi's blocking body reader, after what the loop already read."""

    def __init__(self, loop, receive, head: bytes) -> None:
        super().__init__(loop, receive)
        self.buffer.extend(head)


class _Answer:
    """What the request thread produces: the start message and the body, gathered until
    ``BUFFER`` bytes, then sent one chunk at a time through the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, send) -> None:
        self.loop, self.send = loop, send
        self.start: dict | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.streaming = False

    def start_response(self, status: str, headers, exc_info=None):
        if exc_info is not None and self.streaming:
            raise exc_info[1].with_traceback(exc_info[2])
        self.start = {
            "type": "http.response.start",
            "status": int(status.split(" ", 1)[0]),
            "headers": [
                (name.strip().encode("latin1").lower(), value.strip().encode("latin1"))
                for name, value in headers
            ],
        }
        return self.write

    def _send_now(self, message: dict) -> None:
        asyncio.run_coroutine_threadsafe(self.send(message), self.loop).result()

    def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        if not self.streaming and self.size + len(chunk) <= BUFFER:
            self.chunks.append(chunk)
            self.size += len(chunk)
            return
        if not self.streaming:
            self.streaming = True
            assert self.start is not None, "a body before start_response"
            self._send_now(self.start)
            for pending in self.chunks:
                self._send_now({"type": "http.response.body", "body": pending, "more_body": True})
            self.chunks.clear()
        self._send_now({"type": "http.response.body", "body": chunk, "more_body": True})


class WSGIBridge:
    """ASGI application running ``app`` (a WSGI application) on ``workers`` threads."""

    def __init__(self, app, workers: int) -> None:
        self.app = app
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="http")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":  # lifespan is off; websockets are routed elsewhere
            raise ValueError(f"WSGIBridge serves HTTP, not {scope['type']}")
        loop = asyncio.get_running_loop()
        head = bytearray()
        more = True
        while more and len(head) <= BUFFER:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            head.extend(message.get("body", b""))
            more = message.get("more_body", False)
        body = _RestOfBody(loop, receive, bytes(head)) if more else io.BytesIO(head)
        answer = _Answer(loop, send)
        # a2wsgi annotates the body as its own reader, but only stores it as ``wsgi.input``,
        # which its Environ types as any input stream (a BytesIO is one).
        environ = build_environ(scope, body)  # type: ignore[arg-type]
        context = contextvars.copy_context()
        await loop.run_in_executor(self.executor, context.run, self._run, environ, answer)
        if answer.streaming:
            await send({"type": "http.response.body", "body": b""})
            return
        assert answer.start is not None, "the application answered without start_response"
        await send(answer.start)
        await send({"type": "http.response.body", "body": b"".join(answer.chunks)})

    def _run(self, environ: Environ, answer: _Answer) -> None:
        iterable = self.app(environ, answer.start_response)
        try:
            for chunk in iterable:
                answer.write(chunk)
        finally:
            close = getattr(iterable, "close", None)
            if close is not None:
                close()
