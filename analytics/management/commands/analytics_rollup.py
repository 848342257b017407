"""``manage.py analytics_rollup``: one rollup run now, or ``--rebuild --from … [--to …]`` to
rebuild every hour (and its day) of a range from the events."""

from __future__ import annotations

import datetime as dt
import time

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from analytics import rollups


def _moment(text: str) -> dt.datetime:
    """An ISO 8601 date or date-time; UTC when it names no offset."""
    value = parse_datetime(text)
    if value is None:
        day = parse_date(text)
        if day is None:
            raise CommandError(f"not an ISO 8601 date or date-time: {text!r}")
        value = dt.datetime(day.year, day.month, day.day)
    if timezone.is_naive(value):
        value = value.replace(tzinfo=dt.UTC)
    return value


class Command(BaseCommand):
    help = "Run the analytics rollups now, or rebuild a range of them from the events."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--rebuild", action="store_true", help="rebuild [--from, --to) from the events"
        )
        parser.add_argument("--from", dest="start", help="ISO 8601, inclusive (with --rebuild)")
        parser.add_argument("--to", dest="end", help="ISO 8601, exclusive; default now")

    def handle(self, *args, **opts) -> None:
        started = time.perf_counter()
        if opts["rebuild"]:
            if not opts["start"]:
                raise CommandError("--rebuild needs --from")
            start = _moment(opts["start"])
            end = _moment(opts["end"]) if opts["end"] else timezone.now()
            if end <= start:
                raise CommandError("--to must be after --from")
            result = rollups.rollup_rebuild(start, end)
        elif opts["start"] or opts["end"]:
            raise CommandError("--from and --to go with --rebuild")
        else:
            result = rollups.rollup_run(wait=True)
        self.stdout.write(
            f"{result.events} new event(s), {result.hours} hour(s) and {result.days} day(s) "
            f"rebuilt in {time.perf_counter() - started:.1f} s"
        )
