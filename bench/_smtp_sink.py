"""A local SMTP sink for the benchmarks: aiosmtpd in a process of its own.

    .venv/bin/python bench/_smtp_sink.py --smtp-port 2525 --control-port 2526

It accepts as many concurrent SMTP connections as are opened (one asyncio task each), counts
the messages it receives and notes the first and last receive times (epoch seconds, this
machine's clock). With ``--record`` it also keeps, for each recipient, the bench token found in
the message (``token=<word>`` in the body), so that a check can tell every recipient got their
own text. It drops the messages themselves.

Control channel, a tiny HTTP endpoint on ``--control-port``:
``GET /stats`` → ``{"count", "recipients", "first", "last"}``; ``GET /tokens`` → ``{recipient:
[token, …]}`` (with ``--record``); ``DELETE /stats`` forgets everything.

From a benchmark, :class:`Sink` starts it, reads it and stops it.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_TOKEN = re.compile(rb"token=([A-Za-z0-9_-]+)")


class State:
    def __init__(self, record: bool):
        self.record = record
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.recipients = 0
        self.first: float | None = None
        self.last: float | None = None
        self.tokens: dict[str, list[str]] = {}

    def snapshot(self) -> dict:
        with self.lock:
            return {
                "count": self.count,
                "recipients": self.recipients,
                "first": self.first,
                "last": self.last,
            }


class Handler:
    """aiosmtpd handler: counts each message (and records its token per recipient)."""

    def __init__(self, state: State):
        self.state = state

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        now = time.time()
        state = self.state
        token = None
        if state.record:
            found = _TOKEN.search(envelope.original_content or envelope.content)
            token = found.group(1).decode() if found else ""
        with state.lock:
            state.count += 1
            state.recipients += len(envelope.rcpt_tos)
            if state.first is None:
                state.first = now
            state.last = now
            if token is not None:
                for rcpt in envelope.rcpt_tos:
                    state.tokens.setdefault(rcpt.lower(), []).append(token)
        return "250 OK"


def serve(smtp_port: int, control_port: int, record: bool) -> None:
    from aiosmtpd.controller import Controller

    state = State(record)
    controller = Controller(
        Handler(state),
        hostname="127.0.0.1",
        port=smtp_port,
        ready_timeout=30,
        data_size_limit=0,
    )
    controller.start()

    class Control(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/stats":
                self.answer(state.snapshot())
            elif self.path == "/tokens":
                with state.lock:
                    self.answer(dict(state.tokens))
            else:
                self.answer({"error": "not found"}, 404)

        def do_DELETE(self):
            with state.lock:
                state.reset()
            self.answer(state.snapshot())

        def answer(self, payload, status=200):
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    try:
        ThreadingHTTPServer(("127.0.0.1", control_port), Control).serve_forever()
    finally:
        controller.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sink:
    """The sink in a child process: ``with Sink(record=True) as sink: … sink.stats()``."""

    def __init__(self, record: bool = False):
        self.record = record
        self.smtp_port, self.control_port = free_port(), free_port()
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Sink:
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--smtp-port",
            str(self.smtp_port),
            "--control-port",
            str(self.control_port),
        ] + (["--record"] if self.record else [])
        self.process = subprocess.Popen(argv)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.stats()
                with socket.create_connection(("127.0.0.1", self.smtp_port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise SystemExit("the SMTP sink did not come up") from None
                time.sleep(0.1)
        return self

    def __exit__(self, *exc) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(20)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def call(self, path: str, method: str = "GET"):
        url = f"http://127.0.0.1:{self.control_port}{path}"
        request = urllib.request.Request(url, method=method)
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read())

    def stats(self) -> dict:
        return self.call("/stats")

    def reset(self) -> dict:
        return self.call("/stats", "DELETE")

    def tokens(self) -> dict[str, list[str]]:
        return self.call("/tokens")

    def wait_for(self, n: int, timeout: float, stalled: float = 30.0) -> dict:
        """Polls until the sink holds ``n`` messages, ``timeout`` s pass, or nothing arrived
        for ``stalled`` s; answers the last stats."""
        deadline = time.monotonic() + timeout
        seen, since = -1, time.monotonic()
        while True:
            stats = self.stats()
            if stats["count"] != seen:
                seen, since = stats["count"], time.monotonic()
            now = time.monotonic()
            if stats["count"] >= n or now > deadline or now - since > stalled:
                return stats
            time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smtp-port", type=int, default=2525)
    parser.add_argument("--control-port", type=int, default=2526)
    parser.add_argument(
        "--record", action="store_true", help="keep each recipient's token (token=…)"
    )
    args = parser.parse_args()
    serve(args.smtp_port, args.control_port, args.record)


if __name__ == "__main__":
    main()
