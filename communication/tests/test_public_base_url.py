"""Links and provider callbacks point where the service listens when PUBLIC_BASE_URL is unset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def public_base_url(**env: str) -> str:
    """``settings.PUBLIC_BASE_URL`` in a fresh process started with ``env``."""
    environ = {k: v for k, v in os.environ.items() if k not in ("HOST", "PORT", "PUBLIC_BASE_URL")}
    # Settings only: no server is reached.
    environ.update(
        DJANGO_SETTINGS_MODULE="communication.settings",
        DATABASE_URL="postgres://x@127.0.0.1:1/x",
        REDIS_URL="redis://127.0.0.1:1/0",
        **env,
    )
    done = subprocess.run(
        [sys.executable, "-c", "from django.conf import settings; print(settings.PUBLIC_BASE_URL)"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "http://127.0.0.1:8000"),
        ({"PORT": "9123"}, "http://127.0.0.1:9123"),
        ({"HOST": "0.0.0.0", "PORT": "9000"}, "http://127.0.0.1:9000"),
        ({"HOST": "comm.local", "PORT": "8080"}, "http://comm.local:8080"),
        ({"HOST": "::1"}, "http://[::1]:8000"),
        ({"PORT": "9123", "PUBLIC_BASE_URL": "https://comm.example/"}, "https://comm.example"),
    ],
)
def test_the_default_follows_host_and_port(env, expected):
    assert public_base_url(**env) == expected
