"""Crash points for the fault suite (``tests/faults``): test-only, off unless
``COMMUNICATION_FAULTS`` is set, which a deployment never does.

At a named point the process exits at once (``os._exit``, no cleanup, no commit), as a
``kill -9`` or a lost machine would leave it, so that a test can prove what survives a crash at
each step of a send. ``COMMUNICATION_FAULTS`` is a comma-separated list of

- ``point``: every time the process passes it;
- ``point@N``: the N-th time this process passes it (counted per process);
- ``point=text``: only when the point's subject (a delivery's address) contains ``text``.

Unknown point names are refused at start-up, so that a typo cannot make a scenario pass.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured

POINTS = frozenset(
    {
        # The send API, inside the request's transaction, before it commits.
        "send.before_commit",
        # After the commit, before the deliveries are handed to the broker.
        "send.after_commit",
        # After the hand-over to the broker (the publish itself, with no linger).
        "send.after_enqueue",
        # The worker, before a delivery's render and provider call (a "poison" delivery).
        "delivery.before_provider_call",
        # The worker, between the provider's acceptance and its record.
        "delivery.after_provider_call",
    }
)

EXIT_CODE = 86


@dataclass
class _Fault:
    nth: int = 0
    match: str = ""


def _parse(value: str) -> dict[str, _Fault]:
    faults: dict[str, _Fault] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, match = item.split("=", 1) if "=" in item else (item, "")
        name, nth = name.split("@", 1) if "@" in name else (name, "0")
        if name not in POINTS or not nth.isdigit():
            raise ImproperlyConfigured(f"COMMUNICATION_FAULTS: unknown fault {item!r}")
        faults[name] = _Fault(int(nth), match)
    return faults


_FAULTS = _parse(os.environ.get("COMMUNICATION_FAULTS", ""))
_hits: dict[str, int] = {}
_lock = threading.Lock()


def fault_point(name: str, subject: str = "") -> None:
    """Exits the process here when ``COMMUNICATION_FAULTS`` names this point (see the module)."""
    if not _FAULTS:
        return
    fault = _FAULTS.get(name)
    if fault is None or (fault.match and fault.match not in subject):
        return
    with _lock:
        _hits[name] = hit = _hits.get(name, 0) + 1
    if fault.nth and hit != fault.nth:
        return
    sys.stderr.write(f"fault injected: {name} (pid {os.getpid()})\n")
    sys.stderr.flush()
    os._exit(EXIT_CODE)
