"""The database's settings, part of ``communication.settings`` (which imports every name here,
after the embedded servers have set ``DATABASE_URL``): the connection, its pools, and what a
PostgreSQL outage does (``communication.dboutage``)."""

from __future__ import annotations

import environ

env = environ.Env()

DATABASES = {"default": env.db_url("DATABASE_URL")}
# Django's backend, failing fast while the server is unreachable (503 unavailable, see dboutage).
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["ENGINE"] = "communication.postgres"
# After a failed connection, new ones fail at once for this long; Retry-After of those 503s.
DB_DOWN_HOLD = env.float("DB_DOWN_HOLD", default=1.0)
DB_UNAVAILABLE_RETRY_AFTER = env.int("DB_UNAVAILABLE_RETRY_AFTER", default=2)
# Under ASGI every request runs in a thread of its own, so Django's persistent connections
# (CONN_MAX_AGE) would open one connection per request and leak them: the web process takes its
# connections from a psycopg 3 pool (communication.asgi sets DB_POOL_MAX_SIZE). Workers and
# commands run one task at a time per process and keep one persistent connection, which is faster.
DB_POOL_MAX_SIZE = env.int("DB_POOL_MAX_SIZE", default=0)
# Threads that run HTTP requests in each web process (communication.asgi); keep it below the pool.
WEB_THREADS = env.int("WEB_THREADS", default=8)
# Connections the event loop of each web process keeps for its own statements (communication.adb).
DB_ASYNC_POOL_MAX_SIZE = env.int("DB_ASYNC_POOL_MAX_SIZE", default=4)
DB_POOL_TIMEOUT = env.float("DB_POOL_TIMEOUT", default=10.0)
# A pooled connection lost gives up reconnecting (backing off) after this many seconds; the pool
# then opens one when a request needs it, so it is back as soon as the server is.
DB_POOL_RECONNECT_TIMEOUT = env.float("DB_POOL_RECONNECT_TIMEOUT", default=2.0)
DATABASES["default"]["CONN_MAX_AGE"] = (
    0 if DB_POOL_MAX_SIZE else env.int("DB_CONN_MAX_AGE", default=60)
)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"].setdefault("OPTIONS", {})
if DB_POOL_MAX_SIZE:
    DATABASES["default"]["OPTIONS"]["pool"] = {
        "min_size": 1,
        "max_size": DB_POOL_MAX_SIZE,
        "timeout": DB_POOL_TIMEOUT,
        "max_idle": 300,
        "reconnect_timeout": DB_POOL_RECONNECT_TIMEOUT,
    }
DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", 5)
# Server-side parameter binding lets PostgreSQL keep a query's plan: a statement run a few times
# on a connection is prepared once (Django's default, client-side binding, plans every query
# again). Off for a pooler in transaction mode (PgBouncer), which cannot keep prepared statements.
if env.bool("DB_PREPARED_STATEMENTS", default=True):
    DATABASES["default"]["OPTIONS"].setdefault("server_side_binding", True)
    DATABASES["default"]["OPTIONS"].setdefault("prepare_threshold", 5)
# Two test runs on one server (two checkouts, two developers) each name their own test database.
if env.str("TEST_DATABASE_NAME", default=""):
    DATABASES["default"]["TEST"] = {"NAME": env.str("TEST_DATABASE_NAME")}
