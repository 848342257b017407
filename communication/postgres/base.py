"""Django's PostgreSQL backend (``ENGINE = "communication.postgres"``), aware of outages.

Every new connection asks ``communication.dboutage`` first: while the database is known to be
unreachable it fails at once instead of waiting. Every attempt reports its outcome there, the
pool's own reconnections in the background included (its ``connection_class``). A request waits
for a pooled connection in short slices, so that it stops waiting as soon as any thread learns
that the database is gone rather than at the end of ``DB_POOL_TIMEOUT``.
"""

from __future__ import annotations

import time

import psycopg
from django.db.backends.postgresql import base
from django.utils.asyncio import async_unsafe
from psycopg_pool import PoolTimeout

from communication import dboutage

# How often a request waiting for a pooled connection looks whether the database went down.
WAIT_SLICE = 0.2
# libpq's own minimum: a probe of an unreachable server gives up after this many seconds.
PROBE_CONNECT_TIMEOUT = 2


class WatchedConnection(psycopg.Connection):
    """The pool's connections: each attempt to open one reports its outcome."""

    @classmethod
    def connect(cls, *args, **kwargs):
        try:
            conn = super().connect(*args, **kwargs)
        except psycopg.OperationalError:
            dboutage.failed()
            raise
        dboutage.succeeded()
        return conn


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self):
        options = self.settings_dict["OPTIONS"].get("pool")
        if isinstance(options, dict) and "connection_class" not in options:
            options["connection_class"] = WatchedConnection
        # django-stubs do not know the pool.
        return super().pool  # type: ignore[misc]

    @async_unsafe
    def get_new_connection(self, conn_params):
        probing = dboutage.admit()
        try:
            pool = self.pool
            if pool is None:
                connection = super().get_new_connection(conn_params)
            else:
                if probing:
                    # A connection of its own: the pool's reconnections back off (up to
                    # DB_POOL_RECONNECT_TIMEOUT) and would delay the news that the server is back.
                    params = {**conn_params, "connect_timeout": PROBE_CONNECT_TIMEOUT}
                    psycopg.connect(**params).close()
                    dboutage.succeeded()
                    pool.drain()  # its idle connections died with the server
                connection = self._pooled(pool)
        except psycopg.Error:
            dboutage.failed()
            raise
        except BaseException:
            if probing:
                dboutage.failed()  # a probe that ended otherwise: the next one after the hold
            raise
        dboutage.succeeded()
        return connection

    def _pooled(self, pool):
        """Django's pooled ``get_new_connection``, waiting in slices (see the module)."""
        self.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
        options = self.settings_dict["OPTIONS"]
        if "isolation_level" in options:
            self.isolation_level = psycopg.IsolationLevel(options["isolation_level"])
        pool.open()
        deadline = time.monotonic() + pool.timeout
        while True:
            wait = min(WAIT_SLICE, deadline - time.monotonic())
            try:
                connection = pool.getconn(timeout=max(wait, 0.001))
                break
            except PoolTimeout:
                if dboutage.is_down() or time.monotonic() >= deadline:
                    raise
        if "isolation_level" in options:
            connection.isolation_level = self.isolation_level
        return connection
