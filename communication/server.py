"""The ASGI server process: uvicorn on ``communication.asgi``, logging through Django's config.

``python -m communication.server --host H --port P [--workers N]``. uvicorn's own log config is
turned off so its lines go through our JSON formatter and token redaction (its default access and
websocket lines would print ``?token=`` query strings).
"""

from __future__ import annotations

import argparse
import os

import django
import uvicorn


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    # Each process runs HTTP requests on WEB_THREADS threads (communication.asgi).
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "1")))
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "communication.settings")
    # Settings are loaded before communication.asgi is imported: pool here too.
    os.environ.setdefault("DB_POOL_MAX_SIZE", "20")
    django.setup()

    uvicorn.run(
        "communication.asgi:application",
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,  # RequestIdMiddleware writes the access log, without query strings
        proxy_headers=True,
        lifespan="off",
        ws_max_size=1024 * 1024,
        # Events are small JSON frames: compressing each one cost the event loop more (13 % of
        # its time under load) than it saves on the wire.
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=10,
        workers=args.workers if args.workers > 1 else None,
    )


if __name__ == "__main__":
    main()
