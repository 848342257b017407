"""The command lines of our processes: ``serve`` runs them, and so do the tests and the benches.

Kept free of Django so that the root conftest and the bench scripts can import it before settings
are loaded.
"""

from __future__ import annotations

import os
import sys


def server_argv(port: int, *, host: str | None = None, workers: int | None = None) -> list[str]:
    """``communication.server`` (uvicorn) on ``port``; its defaults for what is not given."""
    argv = [sys.executable, "-m", "communication.server"]
    if host is not None:
        argv += ["--host", host]
    argv += ["--port", str(port)]
    if workers is not None:
        argv += ["--workers", str(workers)]
    return argv


def worker_argv(
    *,
    queues: str,
    name: str,
    loglevel: str = "INFO",
    concurrency: int | None = None,
    pool: str | None = None,
) -> list[str]:
    """A Celery worker consuming ``queues`` (comma-separated broker names), as node ``name``."""
    argv = [sys.executable, "-m", "celery", "-A", "communication", "worker", "-Q", queues]
    if pool is not None:
        argv += ["--pool", pool]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    return [
        *argv,
        "--loglevel",
        loglevel,
        "-n",
        name,
        "--without-mingle",
        "--without-gossip",
    ]


def beat_argv(*, loglevel: str = "INFO") -> list[str]:
    """celery beat with the scheduler of the settings (``CELERY_BEAT_SCHEDULER``: the one that
    sends only while it holds the beat lock, so a second copy is harmless), no pidfile."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "communication",
        "beat",
        "--pidfile=",
        "--loglevel",
        loglevel,
    ]


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` is running (a zombie, dead but not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0).
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True
