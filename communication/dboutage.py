"""What this process knows about PostgreSQL being unreachable, so that a request fails at once.

Once a connection attempt fails (a request's, or the pool's own reconnection in the background),
the process is *down*: for ``DB_DOWN_HOLD`` seconds every request that needs a new connection
fails at once with :class:`DatabaseDownError` (answered ``503 unavailable``) instead of each
waiting out the pool's timeout. Then one request at a time tries again (the probe); its success
ends the outage for everyone, its failure starts another hold. The database backend
(``communication.postgres``) asks here before every new connection and reports every attempt.
"""

from __future__ import annotations

import logging
import threading
import time

import psycopg
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from psycopg_pool import PoolClosed, PoolTimeout

logger = logging.getLogger(__name__)


class DatabaseDownError(OperationalError):
    """Raised instead of connecting while this process knows the database is unreachable."""


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.down = False
        self.probing = False
        self.retry_at = 0.0


_state = _State()


def admit() -> bool:
    """Before a new connection: ``False`` when the database is up (connect as usual), ``True``
    when the caller is the probe of an outage (it must report the outcome with
    :func:`succeeded` or :func:`failed`); raises :class:`DatabaseDownError` otherwise."""
    with _state.lock:
        if not _state.down:
            return False
        if _state.probing or time.monotonic() < _state.retry_at:
            raise DatabaseDownError("The database is unreachable.")
        _state.probing = True
        return True


def failed() -> None:
    """A connection attempt failed: the database is down for at least ``DB_DOWN_HOLD``."""
    with _state.lock:
        if not _state.down:
            logger.warning(
                "database unreachable: failing fast, trying again every %ss", settings.DB_DOWN_HOLD
            )
        _state.down, _state.probing = True, False
        _state.retry_at = time.monotonic() + settings.DB_DOWN_HOLD


def succeeded() -> None:
    """A connection was made: the outage, if any, is over."""
    if _state.down or _state.probing:
        with _state.lock:
            if _state.down:
                logger.warning("database reachable again")
            _state.down = _state.probing = False


def is_down() -> bool:
    return _state.down


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` means the database could not be reached (not a statement's own error,
    such as a timeout or a constraint, which leaves its connection usable). Django's wrapped
    errors and psycopg's own (``communication.adb``) alike."""
    if isinstance(exc, DatabaseDownError):
        return True
    django_error = isinstance(exc, (OperationalError, InterfaceError))
    if not django_error and not isinstance(exc, psycopg.Error):
        return False
    cause = exc if isinstance(exc, psycopg.Error) else exc.__cause__
    if isinstance(cause, (PoolTimeout, PoolClosed)):
        return True
    # No SQLSTATE: the client lost or never had its connection; 08: connection exceptions;
    # 57P: the server shutting down, crashed or starting (57014, a statement timeout, is not).
    if isinstance(cause, psycopg.OperationalError):
        state = cause.sqlstate or ""
        if not state or state.startswith(("08", "57P")):
            return True
    if not django_error:
        return False
    # The connection was never made, or was lost (Django drops one whose rollback failed).
    raw = connection.connection
    return raw is None or bool(getattr(raw, "closed", False))
