"""The fan-out of one run's step: its pending ledger rows become notifications and deliveries
through ``recipients_write`` (the one writer: preferences, consent, suppression, quiet hours as
for single sends), a batch per task on the ``bulk`` queue.

Each batch is ONE transaction: read the campaign's status (``FOR SHARE``: a pause waits for the
batch in flight, then the next one sees it), claim due pending rows (``FOR UPDATE SKIP
LOCKED``), evaluate the step's condition in SQL, write the notifications and mark the rows —
so a crash rolls the whole batch back and a step is never written twice for anyone.

Backpressure: a batch is not written while the step still has more than ``FANOUT_BACKLOG_BATCHES``
batches of deliveries queued or sending; the task comes back after ``FANOUT_WAIT_SECONDS``. The
fan-out thus stays about two batches ahead of delivery, which is what makes a pause stop new
sends within one batch although writing is faster than sending.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import zoneinfo
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone

from analytics.models import Event
from campaigns.audiences import step_materialise
from campaigns.models import Campaign, CampaignRecipient, CampaignRun, CampaignStep
from campaigns.segments import compile_rules
from campaigns.services.status import campaign_transition
from communication.celery import app, queue
from communication.exceptions import ConflictError
from communication.models import User
from notifications.models import Delivery, NotificationRequest
from notifications.resolution import Recipient
from notifications.services.requests import request_cancel, requests_hold, requests_release
from notifications.services.send import recipients_write

logger = logging.getLogger(__name__)

FAN_OUT = "campaigns.tasks.fan_out"
FANOUT_BACKLOG_BATCHES = 2
FANOUT_WAIT_SECONDS = 0.5
# A step with due rows whose chain has not run a batch for this long is kicked again by ``due``.
FANOUT_STALL_SECONDS = 30

State = CampaignRecipient.State
# Statuses of a delivery not yet handed to a provider.
WAITING_DELIVERIES = ("scheduled", "held", "queued", "sending")
S = Campaign.Status

# condition {"previous": …}: the previous step's events that make it true, and whether true
# means "had one" (opened) or "had none" (not_opened). A click is an open too.
PREVIOUS = {
    "opened": (("opened", "clicked"), True),
    "clicked": (("clicked",), True),
    "not_opened": (("opened", "clicked"), False),
    "not_clicked": (("clicked",), False),
}


def _marker(run_id: Any, step_id: Any) -> str:
    return f"campaigns:fanout:{run_id}:{step_id}"


def fanout_enqueue(run_id: Any, step_id: Any, *, countdown: float | None = None) -> None:
    """Enqueues one fan-out batch of ``run_id``'s ``step_id`` on the bulk queue."""
    app.send_task(
        FAN_OUT,
        (str(run_id), str(step_id)),
        queue=queue("bulk"),
        countdown=countdown,
        ignore_result=True,
    )


def fanout_kick(campaign: Campaign) -> None:
    """Resume: releases the campaign's held requests (their queued deliveries are enqueued
    again) and enqueues the fan-out of every step of its running runs that has due pending
    rows."""
    requests_release(NotificationRequest.objects.filter(campaign_id=campaign.id))
    now = timezone.now()
    for run_id, step_id in (
        CampaignRecipient.objects.filter(
            run__campaign=campaign,
            run__status=CampaignRun.Status.RUNNING,
            state=State.PENDING,
            due_at__lte=now,
        )
        .values_list("run_id", "step_id")
        .distinct()
    ):
        cache.set(_marker(run_id, step_id), 1, FANOUT_STALL_SECONDS)
        fanout_enqueue(run_id, step_id)


def fanout_stalled_kick(run: CampaignRun, *, now: dt.datetime) -> int:
    """Enqueues the fan-out of ``run``'s steps with due pending rows and no chain at work (a
    later step whose delay passed, or a chain whose worker died); returns how many."""
    kicked = 0
    for step_id in (
        CampaignRecipient.objects.filter(run=run, state=State.PENDING, due_at__lte=now)
        .values_list("step_id", flat=True)
        .distinct()
    ):
        if cache.add(_marker(run.id, step_id), 1, FANOUT_STALL_SECONDS):
            fanout_enqueue(run.id, step_id)
            kicked += 1
    return kicked


# --------------------------------------------------------------------------- scheduling


def _zone(name: str) -> dt.tzinfo:
    try:
        return zoneinfo.ZoneInfo(name) if name else dt.UTC
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return dt.UTC


def _in_window(t: dt.time, start: dt.time, end: dt.time) -> bool:
    if start <= end:
        return start <= t < end
    return t >= start or t < end  # a window over midnight (e.g. 20:00-08:00)


def send_time(
    campaign: Campaign,
    *,
    due: dt.datetime,
    zone_name: str,
    now: dt.datetime,
) -> dt.datetime | None:
    """When a recipient in ``zone_name`` (else the campaign's zone) gets a message due at
    ``due``: at the campaign's ``local_time`` on ``due``'s date in that zone — the next day's
    if that time has passed there already (a run started at 10:00 UTC reaches Tokyo tomorrow at
    09:00 rather than late today) — then moved to the next start of the send window when
    outside it. None means now."""
    tz = _zone(zone_name or campaign.timezone)
    at = max(due, now)
    if campaign.local_time is not None:
        day = due.astimezone(tz).date()
        at = dt.datetime.combine(day, campaign.local_time, tzinfo=tz)
        while at < now:
            at = dt.datetime.combine(
                at.date() + dt.timedelta(days=1), campaign.local_time, tzinfo=tz
            )
    start, end = campaign.window_start, campaign.window_end
    if start is not None and end is not None and start != end:
        local = at.astimezone(tz)
        if not _in_window(local.time(), start, end):
            day = local.date() if local.time() < start else local.date() + dt.timedelta(days=1)
            at = dt.datetime.combine(day, start, tzinfo=tz)
    at = at.astimezone(dt.UTC)
    return at if at > now else None


# --------------------------------------------------------------------------- batches


@dataclass
class Batch:
    """One batch's outcome: ``more`` (another may follow), ``done`` (nothing due left),
    ``stopped`` (the campaign or run is not running), ``wait`` (backpressure)."""

    outcome: str
    queued: int = 0
    skipped: int = 0
    failed: int = 0


def _request_for(run: CampaignRun, step: CampaignStep, campaign: Campaign) -> NotificationRequest:
    """The run and step's request, created once (an advisory lock serialises its creation)."""
    where = {"campaign_id": campaign.id, "run_id": run.id, "step_id": step.id}
    found = NotificationRequest.objects.filter(**where).first()
    if found is not None:
        return found
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", [f"campaign-request:{run.id}:{step.id}"]
        )
    found = NotificationRequest.objects.filter(**where).first()
    if found is not None:
        return found
    request = NotificationRequest(
        caller=f"campaign:{campaign.id}",
        category_id=campaign.category_id,
        template_key=step.template_key,
        content=step.content or {},
        data=campaign.data or {},
        priority="low",  # the bulk queue
        channels=campaign.channels or ["auto"],
        local_timezone=campaign.timezone,
        **where,
    )
    request.save()
    return request


def _backlog(request_id: Any, limit: int) -> int:
    """How many of the request's deliveries wait for a worker, counted up to ``limit``."""
    sql = (
        "SELECT count(*) FROM (SELECT 1 FROM notifications_delivery d "
        "JOIN notifications_notification n ON n.id = d.notification_id "
        "WHERE n.request_id = %s AND d.status IN ('queued', 'sending') LIMIT %s) AS b"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [request_id, limit])
        return int(cursor.fetchone()[0])


def _previous_step(step: CampaignStep) -> CampaignStep | None:
    return (
        CampaignStep.objects.filter(campaign_id=step.campaign_id, position__lt=step.position)
        .order_by("-position")
        .first()
    )


def _excluded(
    run: CampaignRun, step: CampaignStep, rows: list[CampaignRecipient], category: str
) -> dict[int, str]:
    """The rows the step's condition leaves out, with why (one or two queries)."""
    condition = step.condition or {}
    if not condition:
        return {}
    if "previous" in condition:
        previous = _previous_step(step)
        types, wanted = PREVIOUS[condition["previous"]]
        if previous is None:
            return {}
        earlier = dict(
            CampaignRecipient.objects.filter(
                run=run, step=previous, key__in=[r.key for r in rows]
            ).values_list("key", "notification_id")
        )
        engaged = set(
            Event.objects.filter(
                delivery_id__in=Delivery.objects.filter(
                    notification_id__in=[n for n in earlier.values() if n]
                ).values("id"),
                type__in=types,
                machine=False,
            ).values_list("notification_id", flat=True)
        )
        return {
            r.id: f"previous step: {condition['previous']} not met"
            for r in rows
            if (earlier.get(r.key) in engaged) is not wanted
        }
    matching = set(
        User.objects.filter(id__in=[r.user_id for r in rows if r.user_id])
        .filter(compile_rules(condition, category=category))
        .values_list("id", flat=True)
    )
    return {r.id: "condition not met" for r in rows if r.user_id not in matching}


def _mark(updates: list[tuple[int, str, str, Any, dt.datetime | None]]) -> None:
    """Sets each row's state, reason, notification and send time in one UPDATE."""
    if not updates:
        return
    ids, states, reasons, notifications, dues = zip(*updates, strict=True)
    table = CampaignRecipient._meta.db_table
    sql = (
        f"UPDATE {table} AS c SET state = v.state, reason = v.reason, "  # noqa: S608
        "notification_id = v.nid, due_at = coalesce(v.due, c.due_at), updated_at = now() "
        "FROM (SELECT unnest(%s::bigint[]) AS id, unnest(%s::text[]) AS state, "
        "unnest(%s::text[]) AS reason, unnest(%s::uuid[]) AS nid, "
        "unnest(%s::timestamptz[]) AS due) AS v WHERE c.id = v.id"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            sql, [list(ids), list(states), list(reasons), list(notifications), list(dues)]
        )


def _spec(row: CampaignRecipient) -> dict[str, Any]:
    if row.user_id is not None:
        return {"user_id": row.key}
    return {"email": row.email} if row.email else {"phone": row.phone}


def fanout_batch(run_id: Any, step_id: Any, *, now: dt.datetime | None = None) -> Batch:
    """Fans out one batch (``CAMPAIGN_BATCH_SIZE`` rows) of ``run_id``'s ``step_id``."""
    now = now or timezone.now()
    run = CampaignRun.objects.select_related("campaign").get(id=run_id)
    campaign = run.campaign
    step = CampaignStep.objects.get(id=step_id)
    size = settings.CAMPAIGN_BATCH_SIZE
    if run.status != CampaignRun.Status.RUNNING or campaign.status != Campaign.Status.RUNNING:
        return Batch("stopped")
    existing = (
        NotificationRequest.objects.select_related("category")
        .filter(campaign_id=campaign.id, run_id=run.id, step_id=step.id)
        .first()
    )
    limit = FANOUT_BACKLOG_BATCHES * size
    if existing is not None and _backlog(existing.id, limit + 1) > limit:
        return Batch("wait")
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT status FROM campaigns_campaign WHERE id = %s FOR SHARE", [campaign.id]
            )
            status = cursor.fetchone()
        if status is None or status[0] != Campaign.Status.RUNNING:
            return Batch("stopped")
        rows = list(
            CampaignRecipient.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("user")
            .filter(run_id=run.id, step_id=step.id, state=State.PENDING, due_at__lte=now)
            .order_by("id")[:size]
        )
        if not rows:
            return Batch("done")
        excluded = _excluded(run, step, rows, campaign.category_id)
        updates: list[tuple[int, str, str, Any, dt.datetime | None]] = [
            (r.id, State.SKIPPED, reason, None, None)
            for r in rows
            if (reason := excluded.get(r.id))
        ]
        chosen = [r for r in rows if r.id not in excluded]
        recipients = []
        for r in chosen:
            zone = r.user.timezone if r.user is not None else ""
            when = send_time(campaign, due=r.due_at or run.slot, zone_name=zone, now=now)
            recipients.append(
                Recipient(
                    spec=_spec(r),
                    user=r.user,
                    email="" if r.user is not None else r.email,
                    phone="" if r.user is not None else r.phone,
                    data=r.data or {},
                    scheduled_for=when,
                )
            )
        written_count = 0
        if recipients:
            request = existing or _request_for(run, step, campaign)
            written = recipients_write(request, recipients, insert_request=False, strict=False)
            refused = {index: f"{code}: {detail}" for index, code, detail in written.refused}
            notifications = iter(written.notifications)
            for index, (row, recipient) in enumerate(zip(chosen, recipients, strict=True)):
                if index in refused:
                    updates.append((row.id, State.FAILED, refused[index][:255], None, None))
                else:
                    notification = next(notifications)
                    sent_at = recipient.scheduled_for or now
                    updates.append((row.id, State.QUEUED, "", notification.id, sent_at))
                    written_count += 1
        _mark(updates)
    return Batch(
        "more",
        queued=written_count,
        skipped=len(excluded),
        failed=len(chosen) - written_count,
    )


def fanout_step(run_id: Any, step_id: Any) -> Batch:
    """The ``fan_out`` task: one batch, then the next in a new task (so a pause or cancel is seen
    within one batch and the worker's other tasks interleave); when nothing is due any more,
    the next step's rows are written and the run completes once every step is done."""
    cache.set(_marker(run_id, step_id), 1, FANOUT_STALL_SECONDS)
    batch = fanout_batch(run_id, step_id)
    if batch.outcome == "more":
        fanout_enqueue(run_id, step_id)
    elif batch.outcome == "wait":
        fanout_enqueue(run_id, step_id, countdown=FANOUT_WAIT_SECONDS)
    else:
        cache.delete(_marker(run_id, step_id))
        if batch.outcome == "done":
            fanout_finished(run_id)
    return batch


def fanout_finished(run_id: Any) -> None:
    """A step of the run has nothing due left: write the next step's rows (kicking its fan-out
    when they are due already), complete the run and, with no run left, the campaign."""
    run = CampaignRun.objects.select_related("campaign").get(id=run_id)
    if run.status != CampaignRun.Status.RUNNING:
        return
    steps = list(CampaignStep.objects.filter(campaign_id=run.campaign_id).order_by("position"))
    if runs_advance(run, steps):
        campaign_settle(run.campaign)
        return
    fanout_stalled_kick(run, now=timezone.now())


# --------------------------------------------------------------------------- runs


def runs_advance(run: CampaignRun, steps: list[CampaignStep]) -> bool:
    """Writes the next step's rows of ``run`` where the previous step has nothing pending (an
    INSERT … SELECT that a repeat makes a no-op), and completes the run when no step has
    anything pending any more and none of its deliveries waits (scheduled, queued, sending): a
    run is running, and its campaign can be paused by the guardrail, until its last message is
    handed over. Returns whether it completed. Two queries, plus one insert per step that
    becomes due."""
    counts: dict[tuple[Any, str], int] = {}
    for step_id, state, n in (
        CampaignRecipient.objects.filter(run=run)
        .values_list("step_id", "state")
        .annotate(n=Count("id"))
        .values_list("step_id", "state", "n")
    ):
        counts[(step_id, state)] = n
    for previous, step in itertools.pairwise(steps):
        if counts.get((previous.id, "pending")):
            return False
        has_next = any(k[0] == step.id for k in counts)
        if counts.get((previous.id, "queued")) and not has_next:
            if step_materialise(run, previous, step):
                return False
    if steps and counts.get((steps[-1].id, "pending")):
        return False
    if Delivery.objects.filter(
        notification__request__run_id=run.id, status__in=WAITING_DELIVERIES
    ).exists():
        return False
    done = CampaignRun.objects.filter(id=run.id, status=CampaignRun.Status.RUNNING).update(
        status=CampaignRun.Status.COMPLETED, completed_at=timezone.now()
    )
    return bool(done)


def campaign_settle(campaign: Campaign) -> bool:
    """A running campaign with no running run left: a recurring one waits for its next slot
    (back to scheduled), a one-off is completed. Returns whether it moved."""
    if campaign.status != S.RUNNING:
        return False
    if campaign.runs.filter(status=CampaignRun.Status.RUNNING).exists():
        return False
    try:
        campaign_transition(
            campaign,
            S.SCHEDULED if campaign.cron else S.COMPLETED,
            verb="run_complete" if campaign.cron else None,
        )
    except ConflictError:
        return False
    return True


# --------------------------------------------------------------------------- stop


def campaign_stop_sending(campaign: Campaign, *, cancel: bool) -> None:
    """Pause: the campaign's requests are held — workers claim none of their deliveries
    (those already claimed, at most one task's batch, finish) — and the fan-out's next batch
    reads the status and stops. Cancel: pending rows become cancelled, runs cancelled, and what
    of its requests has not gone out yet is cancelled through the requests' own cancel."""
    if not cancel:
        requests_hold(NotificationRequest.objects.filter(campaign_id=campaign.id))
        return
    with transaction.atomic():
        CampaignRecipient.objects.filter(run__campaign=campaign, state=State.PENDING).update(
            state=State.CANCELLED, updated_at=timezone.now()
        )
        campaign.runs.filter(status=CampaignRun.Status.RUNNING).update(
            status=CampaignRun.Status.CANCELLED, completed_at=timezone.now()
        )
    for request in NotificationRequest.objects.filter(campaign_id=campaign.id).values_list(
        "caller", "id"
    ):
        request_cancel(caller=request[0], request_id=request[1])
