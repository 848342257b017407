"""A campaign's life cycle: create and edit a draft, schedule it (or send it for approval), approve,
pause, resume, cancel, and send a test of its first step.

Status moves go through ``campaigns.services.status.campaign_transition`` only; what happens in
the broker and the fan-out (arming a PeriodicTask, starting runs, stopping sends) is the engine's
(``campaigns.services.runs``), called here after the status changed.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import json
import logging
import zoneinfo
from collections.abc import Mapping, Sequence
from typing import Any

from croniter import croniter  # type: ignore[import-untyped]  # types-croniter is not pinned
from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.utils import timezone as tz
from rest_framework import status as http
from rest_framework.exceptions import ValidationError as DRFValidationError

from campaigns import audiences
from campaigns import segments as segment_rules
from campaigns.models import Campaign, CampaignRun, CampaignStep, Segment, StaticList
from campaigns.services import fanout, runs
from campaigns.services.status import FINAL, campaign_transition
from communication.audit import audit_record, field_changes
from communication.exceptions import APIError, ConflictError
from communication.models import Category
from notifications.api.serializers import SendSerializer
from notifications.models import Channel
from notifications.rendering import template_keys
from notifications.services.send import notification_send
from templates_app.services.common import Actor, actor_of

logger = logging.getLogger(__name__)
S = Campaign.Status

# A sequence longer than this is a mistake (or an attack on the validator), not a campaign.
MAX_STEPS = 20
# A step waits at most this long after the previous one.
MAX_DELAY = dt.timedelta(days=365)
# A recurring campaign fires at most hourly: more often is a stream, not a campaign, and every
# slot materialises the whole audience again.
MIN_CRON_INTERVAL = dt.timedelta(hours=1)
# How many upcoming slots are checked against MIN_CRON_INTERVAL (covers a week of hourly slots).
CRON_LOOKAHEAD = 200
# The size of a campaign's ``data`` once serialised.
MAX_DATA_BYTES = 64 * 1024
CONDITIONS_PREVIOUS = ("opened", "clicked", "not_opened", "not_clicked")
# What a draft's edit may change (in the console form's order); once scheduled only the name.
DRAFT_FIELDS = (
    "name",
    "category",
    "channels",
    "segment",
    "static_list",
    "data",
    "steps",
    "send_at",
    "local_time",
    "cron",
    "timezone",
    "window_start",
    "window_end",
)
_UNSET: Any = object()


class ApproverIsAuthorError(APIError):
    status_code = http.HTTP_403_FORBIDDEN
    default_code = "approver_is_author"
    default_detail = "The author of a campaign cannot approve it."


def _invalid(fields: Mapping[str, Sequence[str] | str], detail: str = "") -> APIError:
    out = {k: [v] if isinstance(v, str) else list(v) for k, v in fields.items()}
    first = next(iter(out.items()))
    return APIError(detail or f"{first[0]}: {first[1][0]}", code="validation_error", fields=out)


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


# ------------------------------------------------------------------------------------ validation


def _clean_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise _invalid({"name": "A name is required."})
    if len(name) > 200:
        raise _invalid({"name": "At most 200 characters."})
    return name.strip()


def _clean_category(category: Any) -> Category:
    key = getattr(category, "key", category)
    found = Category.objects.filter(key=key).first() if isinstance(key, str) else None
    if found is None:
        raise _invalid({"category": f"No category {key!r}."})
    return found


def _clean_channels(channels: Any) -> list[str]:
    if channels in (None, "auto", ["auto"], []):
        return ["auto"]
    if not isinstance(channels, list | tuple):
        raise _invalid({"channels": 'A list of channels, or "auto".'})
    bad = [c for c in channels if c not in Channel.values]
    if bad:
        raise _invalid(
            {
                "channels": f"Unknown channel(s): {', '.join(map(str, bad))}; "
                f"use {', '.join(Channel.values)}."
            }
        )
    return list(dict.fromkeys(channels))


def _clean_audience(segment: Any, static_list: Any) -> tuple[Segment | None, StaticList | None]:
    if segment is not None and static_list is not None:
        raise _invalid({"segment": "Give a segment or a static list, not both."})
    if segment is not None and not isinstance(segment, Segment):
        found = _by_id(Segment, segment)
        if found is None:
            raise _invalid({"segment": "No such segment."})
        segment = found
    if static_list is not None and not isinstance(static_list, StaticList):
        found_list = _by_id(StaticList, static_list)
        if found_list is None:
            raise _invalid({"static_list": "No such static list."})
        static_list = found_list
    return segment, static_list


def _by_id(model: Any, value: Any) -> Any:
    try:
        return model.objects.filter(pk=value).first()
    except (ValueError, TypeError, DjangoValidationError):  # a malformed id: no such row
        return None


def _clean_data(data: Any) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise _invalid({"data": "An object of variables."})
    if len(json.dumps(data, default=str)) > MAX_DATA_BYTES:
        raise _invalid({"data": f"At most {MAX_DATA_BYTES} bytes."})
    return data


def _clean_delay(value: Any, path: str) -> dt.timedelta | None:
    if value is None:
        return None
    if isinstance(value, dt.timedelta):
        delay = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        delay = dt.timedelta(seconds=value)
    else:
        raise _invalid({path: "Seconds, a number."})
    if delay < dt.timedelta(0):
        raise _invalid({path: "Must be 0 or more."})
    if delay > MAX_DELAY:
        raise _invalid({path: f"At most {MAX_DELAY.days} days."})
    return delay


def _clean_condition(condition: Any, path: str, position: int) -> dict[str, Any]:
    if not condition:
        return {}
    if not isinstance(condition, dict):
        raise _invalid({path: "An object."})
    if "previous" in condition:
        if set(condition) != {"previous"} or condition["previous"] not in CONDITIONS_PREVIOUS:
            raise _invalid(
                {path + ".previous": f"Must be one of: {', '.join(CONDITIONS_PREVIOUS)}."}
            )
        if position == 1:
            raise _invalid({path + ".previous": "The first step has no previous step."})
        return dict(condition)
    try:
        segment_rules.validate(condition)
    except DRFValidationError as exc:
        detail = exc.detail if isinstance(exc.detail, dict) else {}
        raise _invalid(
            {
                (path if key == "non_field_errors" else f"{path}.{key}"): [str(m) for m in msgs]
                for key, msgs in detail.items()
            }
            or {path: "Invalid rule."}
        ) from None
    return dict(condition)


def _clean_steps(steps: Any) -> list[dict[str, Any]]:
    if steps is None:
        return []
    if not isinstance(steps, list | tuple):
        raise _invalid({"steps": "A list of steps."})
    if len(steps) > MAX_STEPS:
        raise _invalid({"steps": f"At most {MAX_STEPS} steps."})
    given = [s.get("position") if isinstance(s, dict) else None for s in steps]
    if any(p is not None for p in given):
        if sorted(p for p in given if p is not None) != list(range(1, len(steps) + 1)):
            raise _invalid({"steps": "Positions must be 1 to n, each once."})
        order = sorted(range(len(steps)), key=lambda i: int(given[i] or 0))
    else:
        order = list(range(len(steps)))
    cleaned = []
    for position, i in enumerate(order, start=1):
        step, path = steps[i], f"steps[{i}]"
        if not isinstance(step, dict):
            raise _invalid({path: "An object."})
        unknown = set(step) - {
            "position",
            "template_key",
            "content",
            "delay",
            "send_at",
            "condition",
        }
        if unknown:
            raise _invalid({f"{path}.{sorted(unknown)[0]}": "Unknown field."})
        template_key = step.get("template_key") or ""
        content = step.get("content") or {}
        if bool(template_key) == bool(content):
            raise _invalid({f"{path}.template": "Give a template, or inline content, not both."})
        if not isinstance(template_key, str) or len(template_key) > 100:
            raise _invalid({f"{path}.template": "A template family key, at most 100 characters."})
        if not isinstance(content, dict):
            raise _invalid({f"{path}.content": "An object."})
        delay = _clean_delay(step.get("delay"), f"{path}.delay")
        send_at = step.get("send_at")
        if send_at is not None and not isinstance(send_at, dt.datetime):
            raise _invalid({f"{path}.send_at": "An ISO 8601 date-time."})
        if delay is not None and send_at is not None:
            raise _invalid({f"{path}.send_at": "Give a delay or a time, not both."})
        cleaned.append(
            {
                "position": position,
                "template_key": template_key,
                "content": content,
                "delay": delay,
                "send_at": send_at,
                "condition": _clean_condition(step.get("condition"), f"{path}.condition", position),
                "_path": path,
            }
        )
    return cleaned


def _check_templates(steps: list[dict[str, Any]], channels: list[str]) -> None:
    """Each step's template family has a template for every channel the campaign names (for
    ``auto``, for at least one channel)."""
    wanted = list(Channel.values) if channels == ["auto"] else channels
    for step in steps:
        if not step["template_key"]:
            continue
        found = template_keys(step["template_key"], wanted)
        path = f"{step['_path']}.template"
        if channels == ["auto"] and not found:
            raise _invalid({path: f"No active template in the family {step['template_key']!r}."})
        missing = [c for c in wanted if c not in found] if channels != ["auto"] else []
        if missing:
            raise _invalid(
                {
                    path: f"The family {step['template_key']!r} has no template for "
                    f"{', '.join(missing)}."
                }
            )


def _clean_timezone(value: Any, path: str = "timezone") -> str:
    if value in (None, ""):
        return "UTC"
    if not isinstance(value, str) or value not in _zones():
        raise _invalid({path: "An IANA time zone, such as Europe/Paris."})
    return value


def _clean_local_time(value: Any, path: str = "local_time") -> dt.time | None:
    if value in (None, ""):
        return None
    if isinstance(value, dt.time):
        return value.replace(second=0, microsecond=0)
    if isinstance(value, str) and len(value) == 5 and value[2] == ":":
        try:
            return dt.time(int(value[:2]), int(value[3:]))
        except ValueError:
            pass
    raise _invalid({path: 'A time of day, "HH:MM".'})


def _clean_cron(value: Any, zone: str) -> str:
    if value in (None, ""):
        return ""
    if not isinstance(value, str) or len(value) > 100 or len(value.split()) != 5:
        raise _invalid({"cron": 'A cron expression of five fields, such as "0 9 * * 1".'})
    if not croniter.is_valid(value):
        raise _invalid({"cron": f"Not a valid cron expression: {value!r}."})
    start = tz.now().astimezone(zoneinfo.ZoneInfo(zone))
    try:
        it = croniter(value, start)
        fires = [it.get_next(dt.datetime) for _ in range(CRON_LOOKAHEAD)]
    except (ValueError, KeyError, OverflowError):  # croniter's refusals of odd expressions
        raise _invalid({"cron": f"Not a valid cron expression: {value!r}."}) from None
    gaps = [b - a for a, b in itertools.pairwise(fires)]
    if gaps and min(gaps) < MIN_CRON_INTERVAL:
        raise _invalid({"cron": "A recurring campaign fires at most once an hour."})
    return " ".join(value.split())


def _clean_window(start: Any, end: Any) -> tuple[dt.time | None, dt.time | None]:
    start = _clean_local_time(start, "window_start")
    end = _clean_local_time(end, "window_end")
    if (start is None) != (end is None):
        raise _invalid({"window_end": "Give both ends of the send window, or neither."})
    if start is not None and start == end:
        raise _invalid({"window_end": "The window's end must differ from its start."})
    return start, end


def _clean_schedule(*, send_at: Any, local_time: Any, cron: Any, timezone: Any) -> dict[str, Any]:
    zone = _clean_timezone(timezone)
    cron = _clean_cron(cron, zone)
    local = _clean_local_time(local_time)
    if send_at is not None and not isinstance(send_at, dt.datetime):
        raise _invalid({"at": "An ISO 8601 date-time."})
    if cron and send_at is not None:
        raise _invalid({"cron": "A recurring campaign has no single time: give cron or at."})
    if cron and local is not None:
        raise _invalid({"cron": "The cron expression says the time: give cron or local_time."})
    return {"send_at": send_at, "local_time": local, "cron": cron, "timezone": zone}


def _steps_write(campaign: Campaign, steps: list[dict[str, Any]]) -> None:
    campaign.steps.all().delete()
    CampaignStep.objects.bulk_create(
        CampaignStep(campaign=campaign, **{k: v for k, v in step.items() if k != "_path"})
        for step in steps
    )


# ----------------------------------------------------------------------------------- the verbs


def campaign_validate(
    *,
    name: Any,
    category: Any,
    channels: Any = None,
    segment: Any = None,
    static_list: Any = None,
    data: Any = None,
    steps: Any = None,
    send_at: Any = None,
    local_time: Any = None,
    cron: Any = None,
    timezone: Any = None,
    window_start: Any = None,
    window_end: Any = None,
) -> dict[str, Any]:
    """A whole draft checked without writing anything (the console checks its form and steps
    with it before saving): the cleaned fields, ``steps`` included. Raises a 400
    ``validation_error`` naming the field (``steps[1].condition.op``) for anything invalid: an
    unknown category, channel, segment or list, a template family without a template for the
    channels, a malformed schedule."""
    channels = _clean_channels(channels)
    cleaned_steps = _clean_steps(steps)
    segment, static_list = _clean_audience(segment, static_list)
    window = _clean_window(window_start, window_end)
    fields = {
        "name": _clean_name(name),
        "category": _clean_category(category),
        "channels": channels,
        "segment": segment,
        "static_list": static_list,
        "data": _clean_data(data),
        "window_start": window[0],
        "window_end": window[1],
        **_clean_schedule(send_at=send_at, local_time=local_time, cron=cron, timezone=timezone),
    }
    _check_templates(cleaned_steps, channels)
    return {**fields, "steps": cleaned_steps}


@transaction.atomic
def campaign_create(*, actor: Actor, **fields: Any) -> Campaign:
    """A draft campaign with its steps (the fields of :func:`campaign_validate`, which checks
    them and raises what it raises)."""
    cleaned = campaign_validate(**fields)
    steps = cleaned.pop("steps")
    campaign = Campaign.objects.create(created_by=actor_of(actor), **cleaned)
    _steps_write(campaign, steps)
    audit_record(
        "campaign.create",
        "campaigns.campaign",
        campaign.pk,
        changes={"fields": sorted(cleaned), "steps": len(steps)},
        actor=campaign.created_by,
    )
    logger.info(
        "campaign created", extra={"campaign": str(campaign.id), "actor": campaign.created_by}
    )
    return campaign


@transaction.atomic
def campaign_update(*, campaign: Campaign, actor: Actor, **changes: Any) -> Campaign:
    """Changes a draft (any of ``DRAFT_FIELDS``; ``steps`` replaces them all), or the name of a
    campaign past draft: anything else is a 409 ``campaign_not_draft``."""
    unknown = set(changes) - set(DRAFT_FIELDS)
    if unknown:
        raise TypeError(f"campaign_update() got unexpected fields {sorted(unknown)}")
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    before = _audited(campaign)
    if campaign.status != S.DRAFT and set(changes) - {"name"}:
        raise ConflictError(
            f"A {campaign.status} campaign's name only can change; "
            f"not {', '.join(sorted(set(changes) - {'name'}))}.",
            code="campaign_not_draft",
        )
    if "name" in changes:
        campaign.name = _clean_name(changes["name"])
    if "category" in changes:
        campaign.category = _clean_category(changes["category"])
    if "channels" in changes:
        campaign.channels = _clean_channels(changes["channels"])
    if "segment" in changes or "static_list" in changes:
        campaign.segment, campaign.static_list = _clean_audience(
            changes.get("segment", None if "static_list" in changes else campaign.segment),
            changes.get("static_list", None if "segment" in changes else campaign.static_list),
        )
    if "data" in changes:
        campaign.data = _clean_data(changes["data"])
    if {"window_start", "window_end"} & set(changes):
        campaign.window_start, campaign.window_end = _clean_window(
            changes.get("window_start", campaign.window_start),
            changes.get("window_end", campaign.window_end),
        )
    if {"send_at", "local_time", "cron", "timezone"} & set(changes):
        schedule = _clean_schedule(
            send_at=changes.get("send_at", campaign.send_at),
            local_time=changes.get("local_time", campaign.local_time),
            cron=changes.get("cron", campaign.cron),
            timezone=changes.get("timezone", campaign.timezone),
        )
        for field, value in schedule.items():
            setattr(campaign, field, value)
    if "steps" in changes:
        steps = _clean_steps(changes["steps"])
        _check_templates(steps, list(campaign.channels))
        _steps_write(campaign, steps)
    elif "channels" in changes:
        _check_templates(_stored_steps(campaign), list(campaign.channels))
    campaign.save()
    summary = field_changes(before, _audited(campaign), personal=("data",))
    if "steps" in changes:
        summary["steps"] = "changed"
    audit_record(
        "campaign.update", "campaigns.campaign", campaign.pk, changes=summary, actor=actor_of(actor)
    )
    return campaign


# What an update's entry compares: the draft's fields as stored (``data`` by name only, since
# it can carry anything a template renders).
_AUDITED = (
    "name",
    "category_id",
    "channels",
    "segment_id",
    "static_list_id",
    "data",
    "send_at",
    "local_time",
    "cron",
    "timezone",
    "window_start",
    "window_end",
)


def _audited(campaign: Campaign) -> dict[str, Any]:
    return {name: getattr(campaign, name) for name in _AUDITED}


def _stored_steps(campaign: Campaign) -> list[dict[str, Any]]:
    return [
        {"template_key": s.template_key, "_path": f"steps[{s.position - 1}]"}
        for s in campaign.steps.all()
    ]


@transaction.atomic
def campaign_schedule(
    *,
    campaign: Campaign,
    actor: Actor,
    at: Any = _UNSET,
    local_time: Any = _UNSET,
    cron: Any = _UNSET,
    timezone: Any = _UNSET,
) -> Campaign:
    """Schedules a draft: at ``at`` (None: now), at ``local_time`` in each recipient's zone, or on
    ``cron`` in ``timezone``; an argument left out keeps what the draft says. The audience is
    counted now: above ``CAMPAIGN_APPROVAL_THRESHOLD`` the campaign waits for someone other
    than its author to approve it (``pending_approval``), else it is ``scheduled`` and armed.
    Raises 400 for an incomplete campaign (no audience, no step) or a bad schedule, 409
    ``invalid_transition`` unless it is a draft."""
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    if campaign.status != S.DRAFT:
        raise ConflictError(
            f"A {campaign.status} campaign cannot be scheduled.", code="invalid_transition"
        )
    schedule = _clean_schedule(
        send_at=campaign.send_at if at is _UNSET else at,
        local_time=campaign.local_time if local_time is _UNSET else local_time,
        cron=campaign.cron if cron is _UNSET else cron,
        timezone=campaign.timezone if timezone is _UNSET else timezone,
    )
    if schedule["send_at"] is not None and schedule["send_at"] < tz.now() - dt.timedelta(minutes=1):
        raise _invalid({"at": "In the past: give a time to come, or null for now."})
    if campaign.segment_id is None and campaign.static_list_id is None:
        raise _invalid({"segment": "Choose an audience (a segment or a static list) first."})
    steps = _stored_steps(campaign)
    if not steps:
        raise _invalid({"steps": "A campaign needs at least one step."})
    _check_templates(steps, list(campaign.channels))
    count = audiences.audience_count(campaign)
    to = S.PENDING_APPROVAL if count > settings.CAMPAIGN_APPROVAL_THRESHOLD else S.SCHEDULED
    campaign = campaign_transition(campaign, to, audience_count=count, **schedule)
    if to == S.SCHEDULED:
        runs.campaign_arm(campaign)
    logger.info(
        "campaign scheduled",
        extra={
            "campaign": str(campaign.id),
            "status": to,
            "audience": count,
            "actor": actor_of(actor),
        },
    )
    return campaign


def approval_refusal(*, campaign: Campaign, actor: Actor) -> str | None:
    """Why ``actor`` may not approve ``campaign`` (None: they may)."""
    if campaign.created_by and actor_of(actor) == campaign.created_by:
        return "you wrote it; someone else approves it."
    return None


@transaction.atomic
def campaign_approve(*, campaign: Campaign, actor: Actor) -> Campaign:
    """Approves a campaign waiting for approval: it becomes ``scheduled`` and is armed. Its
    author cannot approve it (403 ``approver_is_author``)."""
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    if campaign.status != S.PENDING_APPROVAL:
        raise ConflictError(
            f"A {campaign.status} campaign is not waiting for approval.",
            code="invalid_transition",
        )
    if approval_refusal(campaign=campaign, actor=actor):
        raise ApproverIsAuthorError()
    campaign = campaign_transition(
        campaign, S.SCHEDULED, verb="approve", approved_by=actor_of(actor)
    )
    runs.campaign_arm(campaign)
    return campaign


@transaction.atomic
def campaign_pause(*, campaign: Campaign, actor: Actor) -> Campaign:
    """Pauses a running or scheduled campaign: the fan-out stops at its next batch."""
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    if campaign.status not in (S.RUNNING, S.SCHEDULED):
        raise ConflictError(
            f"A {campaign.status} campaign cannot be paused.", code="invalid_transition"
        )
    campaign = campaign_transition(
        campaign, S.PAUSED, pause_reason=f"paused by {actor_of(actor)}"[:255]
    )
    fanout.campaign_stop_sending(campaign, cancel=False)
    return campaign


@transaction.atomic
def campaign_resume(*, campaign: Campaign, actor: Actor) -> Campaign:
    """Resumes a paused campaign: ``running`` again when it has a run in progress (its fan-out
    is enqueued again), else ``scheduled``."""
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    if campaign.status != S.PAUSED:
        raise ConflictError(
            f"A {campaign.status} campaign is not paused.", code="invalid_transition"
        )
    running = CampaignRun.objects.filter(
        campaign=campaign, status=CampaignRun.Status.RUNNING
    ).exists()
    campaign = campaign_transition(
        campaign, S.RUNNING if running else S.SCHEDULED, verb="resume", pause_reason=""
    )
    fanout.fanout_kick(campaign)
    logger.info("campaign resumed", extra={"campaign": str(campaign.id), "actor": actor_of(actor)})
    return campaign


@transaction.atomic
def campaign_cancel(*, campaign: Campaign, actor: Actor) -> Campaign:
    """Cancels a campaign that is not completed or cancelled: nothing more is sent (pending
    recipients and queued deliveries are cancelled), its runs end and its schedule is removed."""
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    if campaign.status in FINAL:
        raise ConflictError(
            f"A {campaign.status} campaign cannot be cancelled.", code="invalid_transition"
        )
    campaign = campaign_transition(campaign, S.CANCELLED)
    fanout.campaign_stop_sending(campaign, cancel=True)
    runs.campaign_disarm(campaign)
    logger.info(
        "campaign cancelled", extra={"campaign": str(campaign.id), "actor": actor_of(actor)}
    )
    return campaign


# The channel a test goes on, by the kind of address it is sent to.
_TEST_CHANNEL = {"email": "email", "phone": "sms"}


def campaign_test_send(*, campaign: Campaign, actor: Actor, to: Any) -> dict[str, Any]:
    """Sends the campaign's first step, with its data, to ``to`` (``{"email"}``, ``{"phone"}``
    or ``{"user_id"}``) through ``notification_send`` and the send API's validator, so the rules
    of any send apply. Returns the send's answer (``request_id``, notifications, deliveries).
    The request carries no campaign id: a test is not part of the campaign's figures."""
    if (
        not isinstance(to, dict)
        or len(to) != 1
        or next(iter(to)) not in ("email", "phone", "user_id")
    ):
        raise _invalid({"to": 'One of {"email": …}, {"phone": …} or {"user_id": …}.'})
    step = campaign.steps.order_by("position").first()
    if step is None:
        raise _invalid({"steps": "A campaign needs a step to test."})
    kind = next(iter(to))
    channels: Any = list(campaign.channels)
    if kind in _TEST_CHANNEL:
        channel = _TEST_CHANNEL[kind]
        if channels != ["auto"] and channel not in channels:
            raise _invalid({f"to.{kind}": f"The campaign does not send on {channel}."})
        channels = [channel]
    elif channels == ["auto"]:
        channels = "auto"
    payload: dict[str, Any] = {
        "recipients": [dict(to)],
        "category": campaign.category_id,
        "channels": channels,
        "priority": "high",
        "data": dict(campaign.data),
    }
    if step.template_key:
        payload["template"] = step.template_key
    else:
        payload["content"] = dict(step.content)
    with transaction.atomic():
        outcome = notification_send(
            caller=actor_of(actor), payload=SendSerializer.validated(payload)
        )
        audit_record(
            "campaign.test_send",
            "campaigns.campaign",
            campaign.pk,
            changes={"to": kind, "request": str(outcome.body.get("request_id"))},
            actor=actor_of(actor),
        )
    return dict(outcome.body)
