"""The disk under ``var/``: how long a small write plus ``fdatasync`` takes, the way PostgreSQL
flushes its WAL at each synchronous commit.

    .venv/bin/python bench/fsync.py [--seconds 20] [--interval-ms 5]

Overwrites 8 KiB pages of a preallocated 8 MiB file under ``var/`` (as WAL segments are reused),
one ``fdatasync`` each, and prints p50/p99/p99.9/max and the flushes slower than 20 ms with their
time. Run it on an idle machine: whatever else writes to the disk shows up here.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = 8192
PAGES = 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--interval-ms", type=float, default=5.0)
    args = parser.parse_args()
    path = ROOT / "var" / "bench-fsync.tmp"
    path.parent.mkdir(exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, b"\0" * PAGE * PAGES, 0)
        os.fsync(fd)
        page = os.urandom(PAGE)
        took: list[float] = []
        slow: list[tuple[float, float]] = []
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            os.pwrite(fd, page, (len(took) % PAGES) * PAGE)
            start = time.perf_counter()
            os.fdatasync(fd)
            ms = (time.perf_counter() - start) * 1000
            took.append(ms)
            if ms > 20:
                slow.append((time.time(), ms))
            time.sleep(args.interval_ms / 1000)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    took.sort()

    def pct(p: float) -> float:
        return took[min(len(took) - 1, int(len(took) * p))]

    print(
        f"{len(took)} flushes in {args.seconds:.0f} s: p50 {pct(0.5):.2f} ms, "
        f"p99 {pct(0.99):.2f} ms, p99.9 {pct(0.999):.1f} ms, max {took[-1]:.1f} ms"
    )
    print(
        f"slower than 20 ms: {len(slow)} ({len(slow) / args.seconds:.2f}/s)"
        + "".join(f"\n  {time.strftime('%H:%M:%S', time.gmtime(t))} {ms:.0f} ms" for t, ms in slow)
    )


if __name__ == "__main__":
    main()
