"""CPU accounting for the benchmarks, from Linux's /proc."""

from __future__ import annotations

import os
from pathlib import Path


def cpu_seconds(root_pid: int) -> float:
    """User + system CPU of a process and its descendants (Linux /proc), to report what one
    message costs the server whatever else the machine is running."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [root_pid]
    while pending:
        pid = pending.pop()
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        pending.extend(int(c) for c in children)
    return total


def cpu_of_commands(names: tuple[str, ...], *, children: bool = False) -> float:
    """User + system CPU seconds of every process whose command is one of ``names`` (the
    database and Redis servers, local or embedded); with ``children``, their ended children's
    too (a PostgreSQL connection that closed counts in the postmaster's)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            head, tail = (entry / "stat").read_text().rsplit(")", 1)
        except OSError:
            continue
        if head.split("(", 1)[1] in names:
            fields = tail.split()
            total += sum(int(f) for f in fields[11 : 15 if children else 13]) / tick
    return total


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / tick, sum(fields) / tick
