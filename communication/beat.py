"""Celery beat that is harmless twice: ``LeaderScheduler`` is django-celery-beat's DatabaseScheduler,
sending only while its process holds a PostgreSQL session advisory lock.

Every beat process runs; the one holding the lock sends, the others try to take it every
``BEAT_LOCK_RETRY_SECONDS`` and do so once the holder's session ends (its process killed or stopped:
at once; its host gone: when the server's TCP keepalive, set short on that connection, gives up).
The lock lives on a connection of its own: Django's is closed and reopened between ticks (which
would drop a session lock), and a pool would hand it to someone else with the lock still on it.

Each send first claims its slot on that same connection: an UPDATE of the entry's ``last_run_at``
that succeeds only if nobody advanced it since this process read it. A claim that commits proves
the session, so the lock, was alive then, and a new leader reads ``last_run_at`` only after the old
session ended: it never sends a slot the old leader claimed. The claim comes before the publish, so
a crash between the two skips that one slot (the next one comes) rather than sending it twice.
"""

from __future__ import annotations

import logging
import os
import socket
import time

import psycopg
from django.conf import settings
from django.db import DatabaseError, InterfaceError, close_old_connections, connections
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler
from psycopg import sql

logger = logging.getLogger(__name__)

# pg_try_advisory_lock's two keys; the first keeps ours apart from the other advisory locks.
LOCK_SPACE = 0x62656174  # "beat"
LOCK_ID = 1
APPLICATION_NAME = "communication-beat"

_TRY = "SELECT pg_try_advisory_lock(%s, %s)"
_HELD = (
    "SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND pid = pg_backend_pid() AND classid = %s::bigint::oid AND objid = %s::bigint::oid"
    " AND objsubid = 2)"
)
_CLAIM = sql.SQL(
    "UPDATE {table} SET last_run_at = %s, total_run_count = total_run_count + 1"
    " WHERE id = %s AND (last_run_at IS NULL OR last_run_at <= %s)"
).format(table=sql.Identifier(PeriodicTask._meta.db_table))
# The server drops a vanished leader's session (and so its lock) after about 5 + 3 x 2 s.
_SESSION = (
    "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3;"
    " SET statement_timeout = '5s'"
)


class LostLeadError(Exception):
    """The lock's connection failed: another beat may lead from now on."""


class SlotTakenError(Exception):
    """Someone advanced the entry's ``last_run_at`` since this process read it."""


class BeatLock:
    """The session advisory lock that makes one beat the sender, on a connection of its own."""

    def __init__(self, retry: float):
        self.retry = retry
        self.conn: psycopg.Connection | None = None
        self.held = False
        self.next_try = 0.0

    def _connect(self) -> psycopg.Connection:
        params = connections["default"].get_connection_params()
        for key in ("cursor_factory", "prepare_threshold", "context"):
            params.pop(key, None)
        conn = psycopg.connect(
            **params,
            autocommit=True,
            # Seen in pg_stat_activity: which beat process leads.
            application_name=f"{APPLICATION_NAME} {socket.gethostname()} {os.getpid()}",
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
            tcp_user_timeout=15000,
        )
        conn.execute(_SESSION)
        return conn

    def hold(self) -> bool:
        """Whether this process holds the lock: checked (one round trip) while held, else tried,
        at most every ``retry`` seconds."""
        if self.held and self.conn is not None:
            try:
                row = self.conn.execute(_HELD, (LOCK_SPACE, LOCK_ID)).fetchone()
            except psycopg.Error as exc:
                logger.warning("beat: lost the lock's connection, standing by (%s)", exc)
                self.close()
                return False
            if row and row[0]:
                return True
            logger.warning("beat: the lock is gone, standing by")
            self.close()
            return False
        now = time.monotonic()
        if now < self.next_try:
            return False
        self.next_try = now + self.retry
        try:
            if self.conn is None or self.conn.closed:
                self.conn = self._connect()
            row = self.conn.execute(_TRY, (LOCK_SPACE, LOCK_ID)).fetchone()
        except psycopg.Error as exc:
            logger.warning("beat: cannot reach PostgreSQL for the lock (%s)", exc)
            self.close()
            return False
        self.held = bool(row and row[0])
        if self.held:
            logger.info("beat: took the lock, sending the periodic tasks")
        return self.held

    def claim(self, pk: int, last_run_at, run_at) -> None:
        """Moves the entry's ``last_run_at`` from ``last_run_at`` (or earlier) to ``run_at``,
        through the lock's session: raises ``SlotTakenError`` or ``LostLeadError`` when it cannot."""
        if self.conn is None or not self.held:
            raise LostLeadError("the lock is not held")
        try:
            cursor = self.conn.execute(_CLAIM, (run_at, pk, last_run_at))
        except psycopg.Error as exc:
            self.close()
            raise LostLeadError(str(exc)) from exc
        if cursor.rowcount != 1:
            raise SlotTakenError(pk)

    def close(self) -> None:
        """Ends the session, which releases the lock."""
        self.held = False
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg.Error:
                pass
            self.conn = None


class LeaderScheduler(DatabaseScheduler):
    """DatabaseScheduler whose ticks send only while this process holds the beat lock; the
    schedule's run times are written as each slot is claimed, not every few minutes."""

    def __init__(self, *args, **kwargs):
        self.lock = BeatLock(settings.BEAT_LOCK_RETRY_SECONDS)
        super().__init__(*args, **kwargs)

    def tick(self, *args, **kwargs):
        was_leading = self.lock.held
        if not self.lock.hold():
            return min(self.lock.retry, self.max_interval)
        if not was_leading and not self._reload():
            return self.lock.retry
        try:
            return super().tick(*args, **kwargs)
        except SlotTakenError as exc:
            logger.warning("beat: periodic task %s was sent by another beat; reloading", exc)
            return 0 if self._reload() else self.lock.retry
        except LostLeadError as exc:
            logger.warning("beat: lost the lock (%s), standing by", exc)
            return self.lock.retry

    def _reload(self) -> bool:
        """Reads the schedule as the database has it (what an earlier leader claimed is there, not
        in this process's memory); on a database error, gives the lock up and says so."""
        try:
            # A standby's connection may have been idle long enough to be gone.
            close_old_connections()
            self._dirty.clear()
            self._schedule = self.all_as_schedule()
            self._last_timestamp = self.Changes.last_change()
        except (DatabaseError, InterfaceError) as exc:
            logger.warning("beat: cannot read the schedule (%s); releasing the lock", exc)
            self.lock.close()
            return False
        self._heap = None
        return True

    def reserve(self, entry):
        new_entry = next(entry)
        self.lock.claim(entry.model.pk, entry.last_run_at, new_entry.last_run_at)
        return new_entry

    def close(self):
        try:
            super().close()
        finally:
            self.lock.close()
