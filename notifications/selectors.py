"""Reads shared by the API, the admin and the tasks."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import Count, Min, Q, QuerySet

from analytics.models import Event
from communication.compliance.keyed import lookup_hash
from communication.exceptions import APIError, NotFoundError
from communication.models import Category, User, normalize_e164
from notifications import rendering
from notifications.models import (
    Consent,
    Delivery,
    Notification,
    NotificationPreference,
    NotificationRequest,
    OutboxMessage,
    Suppression,
    suppression_hash,
)
from notifications.resolution import SENDABLE

logger = logging.getLogger(__name__)


def request_list(
    *,
    caller: str,
    category: str | None = None,
    since: dt.datetime | str | None = None,  # an ISO string from a query parameter works too
    cancelled: bool | None = None,
) -> QuerySet[NotificationRequest]:
    qs = NotificationRequest.objects.filter(caller=caller)
    if category:
        qs = qs.filter(category_id=category)
    if since:
        qs = qs.filter(created_at__gte=since)
    if cancelled is not None:
        qs = qs.filter(cancelled_at__isnull=not cancelled)
    return qs.annotate(recipient_count=Count("notifications")).order_by("-created_at", "-id")


# What "in the inbox" means, for every read of it (lists, counts, read-all, the websocket): the
# in-app delivery was delivered (``inbox_at``: never for an email-only send, not yet for a
# scheduled one, never for a cancelled one) and the user has not dismissed it.
IN_INBOX = Q(inbox_at__isnull=False, dismissed_at__isnull=True)
UNREAD = Q(IN_INBOX, read_at__isnull=True)
# Newest arrival first: a scheduled item comes in at the top when its time comes.
INBOX_ORDER = ("-inbox_at", "-id")


def inbox_unread(users: User | uuid.UUID | Iterable[uuid.UUID]) -> QuerySet[Notification]:
    """Unread inbox items of one user (a User or its primary key) or of several (their keys)."""
    if isinstance(users, User | uuid.UUID):
        return Notification.objects.filter(UNREAD, user=users)
    return Notification.objects.filter(UNREAD, user_id__in=users)


def inbox(
    user: User, *, unread_only: bool = False, category: str | None = None
) -> QuerySet[Notification]:
    """The user's inbox, newest arrival first."""
    qs = Notification.objects.filter(UNREAD if unread_only else IN_INBOX, user=user)
    if category:
        qs = qs.filter(category_id=category)
    return qs.order_by(*INBOX_ORDER)


def categories_with_preferences(user: User) -> list[dict[str, Any]]:
    """Every category with the user's choice per channel: ``channels`` on/off (as ever) and
    ``modes`` (mode, digest time and weekday: their own, else the category's defaults)."""
    prefs = {
        (p.category_id, p.channel): p for p in NotificationPreference.objects.filter(user=user)
    }
    out = []
    for category in Category.objects.order_by("position", "key"):
        channels: dict[str, bool] = {}
        modes: dict[str, dict[str, Any]] = {}
        defaults = category.digest_modes or {}
        for channel in SENDABLE:
            own = prefs.get((category.key, channel))
            default_on = channel in category.default_channels and defaults.get(channel) != "off"
            if category.mandatory:
                mode = "immediate"
            elif own is not None:
                mode = own.mode
            elif channel == "in_app":
                mode = "immediate" if default_on else "off"
            else:
                mode = defaults.get(channel, "immediate") if default_on else "off"
            channels[channel] = True if category.mandatory else mode != "off"
            time = (own.digest_time if own else None) or category.digest_time
            modes[channel] = {
                "mode": mode,
                "digest_time": f"{time:%H:%M}",
                "digest_weekday": own.digest_weekday
                if own and own.digest_weekday is not None
                else category.digest_weekday,
            }
        out.append(
            {
                "key": category.key,
                "name": category.name,
                "description": category.description,
                "mandatory": category.mandatory,
                "requires_consent": category.requires_consent,
                "channels": channels,
                "frequency_caps": category.frequency_caps,
                "modes": modes,
            }
        )
    return out


@dataclass
class DigestItem:
    """One held delivery as a digest (and the user's digest page) shows it."""

    delivery_id: uuid.UUID
    notification_id: uuid.UUID
    category: str
    category_name: str
    title: str
    summary: str
    url: str
    created_at: dt.datetime
    scheduled_for: dt.datetime | None
    reason: str


def digest_items(deliveries: list[Delivery]) -> list[DigestItem]:
    """Each delivery (its notification, request and category loaded) as an :class:`DigestItem`: the
    in-app title and body when the send had them, else its own channel's rendering."""
    families: dict[tuple[str, str], str] = {}
    return [_item(d, families) for d in deliveries]


def _item(delivery: Delivery, families: dict[tuple[str, str], str]) -> DigestItem:
    notification = delivery.notification
    request = notification.request
    title, summary, url = notification.title, notification.body, notification.action_url
    if not title:
        rendered = _render(delivery, families)
        title = rendered.get("subject") or rendered.get("title") or ""
        summary = rendered.get("body") or rendered.get("text") or ""
        url = rendered.get("action_url") or rendered.get("deep_link") or ""
    category = notification.category
    return DigestItem(
        delivery_id=delivery.id,
        notification_id=notification.id,
        category=category.key,
        category_name=category.name,
        title=(title or request.template_key or category.name)[:200],
        summary=summary[:300],
        url=url,
        created_at=delivery.created_at,
        scheduled_for=delivery.scheduled_for,
        reason=delivery.reason,
    )


def _render(delivery: Delivery, families: dict[tuple[str, str], str]) -> dict[str, Any]:
    """The delivery's message as the worker would render it; a digest lists what it can and
    never fails for one item whose template broke since (its title falls back)."""
    notification = delivery.notification
    request = notification.request
    user = notification.user
    family = request.template_key
    key = ""
    if family:
        if (family, delivery.channel) not in families:
            families[(family, delivery.channel)] = rendering.template_keys(
                family, [delivery.channel]
            ).get(delivery.channel, "")
        key = families[(family, delivery.channel)]
        if not key:
            return {}
    try:
        return rendering.render(
            channel=delivery.channel,
            template_key=key,
            content=request.content,
            data=rendering.recipient_context(notification.data, user=user),
            locale=notification.locale,
            timezone=user.timezone if user else "",
            recipient=user.external_id if user else None,
        )
    except APIError:  # a template error: the item keeps its fallback title
        logger.warning("digest item not rendered", extra={"delivery": str(delivery.id)})
        return {}


def digest_held(user: User, *, limit: int) -> list[dict[str, Any]]:
    """What is held for the user's digests, per channel: when it goes out next, how many items,
    and the newest ``limit`` of them (newest first)."""
    held = Delivery.objects.filter(status="held", notification__user=user)
    out = []
    summary = (
        held.values("channel").annotate(count=Count("id"), next_at=Min("scheduled_for"))
    ).order_by("channel")
    for row in summary:
        newest = list(
            held.filter(channel=row["channel"])
            .select_related("notification__request", "notification__category")
            .order_by("-created_at", "-id")[:limit]
        )
        for d in newest:
            d.notification.user = user
        out.append(
            {
                "channel": row["channel"],
                "next_send_at": row["next_at"],
                "count": row["count"],
                "items": digest_items(newest),
            }
        )
    return out


def consent_list(user: User) -> QuerySet[Consent]:
    return Consent.objects.filter(user=user).order_by("-created_at", "-id")


def outbox_list(*, channel: str | None = None, to: str | None = None) -> QuerySet[OutboxMessage]:
    qs = OutboxMessage.objects.all()
    if channel:
        qs = qs.filter(channel=channel)
    if to:
        qs = qs.filter(outbox_to(to))
    return qs.order_by("-created_at", "-id")


def outbox_to(address: str) -> Q:
    """Outbox messages sent to ``address``: exact (case aside), by keyed hash, since the
    address is encrypted."""
    return Q(to_hash=lookup_hash(address))


def notification_get(user: User, notification_id: uuid.UUID | str) -> Notification:
    """One of the user's inbox items; 404 for anyone else's, and for one not (or no longer) in
    the inbox."""
    notification = Notification.objects.filter(IN_INBOX, id=notification_id, user=user).first()
    if notification is None:
        raise NotFoundError("No such notification.")
    return notification


# ------------------------------------------------------------- the staff console's delivery log

# A search by user id or idempotency key looks through this many of the newest notifications it
# finds: enough for a support case, and the ids stay one bounded index probe.
LOG_SEARCH_NOTIFICATIONS = 2000


@dataclass(frozen=True)
class LogSearch:
    """What a delivery-log search term matched, each by an exact, indexed lookup: a delivery
    (its id), notifications (their id, their request's id or idempotency key, their user's id),
    a recipient address."""

    delivery_id: uuid.UUID | None = None
    notification_ids: tuple[uuid.UUID, ...] = ()
    address: str = ""

    def deliveries(self) -> Q:
        """The condition on deliveries (a term that matched nothing matches no row)."""
        q = Q(pk__in=[])
        if self.delivery_id is not None:
            q |= Q(id=self.delivery_id)
        if self.notification_ids:
            q |= Q(notification_id__in=self.notification_ids)
        if self.address:
            q |= Q(address_hash=lookup_hash(self.address))
        return q


def user_ids_matching(term: str) -> list[uuid.UUID]:
    """Users whose id (``external_id``, the API's ``user_id``) or staff username is ``term``."""
    term = term.strip()
    if not term:
        return []
    return list(
        User.objects.filter(Q(external_id=term) | Q(username=term)).values_list("pk", flat=True)
    )


def delivery_log_search(term: str) -> LogSearch:
    """Interprets a search of the delivery log: a UUID (delivery, notification or request id),
    an email address or phone number (exact, as stored: lower-cased, E.164), a user id, or an
    idempotency key. Never a substring match: addresses are encrypted, found by keyed hash."""
    term = term.strip()
    if not term:
        return LogSearch()
    as_uuid = _uuid_or_none(term)
    user_ids = user_ids_matching(term)
    request_ids = list(
        NotificationRequest.objects.filter(idempotency_key=term).values_list("id", flat=True)[
            :LOG_SEARCH_NOTIFICATIONS
        ]
    )
    if as_uuid is not None:
        request_ids.append(as_uuid)
    matched = Q(request_id__in=request_ids) | Q(user_id__in=user_ids)
    if as_uuid is not None:
        matched |= Q(id=as_uuid)
    notification_ids = tuple(
        Notification.objects.filter(matched)
        .order_by("-id")
        .values_list("id", flat=True)[:LOG_SEARCH_NOTIFICATIONS]
        if request_ids or user_ids or as_uuid
        else ()
    )
    return LogSearch(
        delivery_id=as_uuid, notification_ids=notification_ids, address=_address_or_empty(term)
    )


def notification_log_search(term: str) -> Q:
    """The delivery log's search for the notifications list: those matched, and those with a
    delivery to the address."""
    found = delivery_log_search(term)
    ids = set(found.notification_ids)
    if found.address:
        ids.update(
            Delivery.objects.filter(address_hash=lookup_hash(found.address))
            .order_by("-id")
            .values_list("notification_id", flat=True)[:LOG_SEARCH_NOTIFICATIONS]
        )
    return Q(id__in=ids)


def request_log_search(term: str) -> Q:
    """The requests whose id, caller or idempotency key is ``term`` (each an index)."""
    term = term.strip()
    match = Q(caller=term) | Q(idempotency_key=term)
    as_uuid = _uuid_or_none(term)
    return match | Q(id=as_uuid) if as_uuid is not None else match


def request_recipients(request_id: uuid.UUID, *, limit: int) -> list[Notification]:
    """The first ``limit`` notifications (recipients) of a request, with their users."""
    return list(
        Notification.objects.filter(request_id=request_id)
        .select_related("user")
        .order_by("id")[:limit]
    )


def _uuid_or_none(term: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(term)
    except ValueError:
        return None


def _address_or_empty(term: str) -> str:
    if "@" in term:
        return term.lower()
    if term.startswith("+") or term.replace(" ", "").isdigit():
        try:
            return normalize_e164(term, settings.SMS_DEFAULT_REGION or None)
        except ValidationError:
            return ""
    return ""


def delivery_log() -> QuerySet[Delivery]:
    """Deliveries, newest first (ids are time-ordered: the primary key's index serves the order)
    with what the log shows of their notification and user."""
    return Delivery.objects.select_related("notification", "notification__user").order_by("-id")


def notification_log() -> QuerySet[Notification]:
    """Notifications, newest first, with their request and user."""
    return Notification.objects.select_related("request", "user").order_by("-id")


def uuid7_floor(at: dt.datetime) -> uuid.UUID:
    """The smallest time-ordered id (``communication.ids.uuid7``) made at ``at`` or later: a
    range of creation times is a range of primary keys, which the primary key's index serves on
    tables too big to scan by ``created_at``."""
    ms = int(at.timestamp() * 1000)
    return uuid.UUID(int=(ms & 0xFFFF_FFFF_FFFF) << 80)


# ----------------------------------------------------------------- one notification's timeline


@dataclass
class TimelineEntry:
    """One line of a delivery's timeline: an analytics event, or a time the delivery row keeps
    that no event recorded (the start of its latest attempt, the next one, when it is due)."""

    at: dt.datetime
    type: str
    provider: str = ""
    latency_ms: float | None = None
    details: list[tuple[str, str]] = field(default_factory=list)
    # A ``resent`` event: the delivery it was resent as.
    resent_as: uuid.UUID | None = None
    upcoming: bool = False


@dataclass
class DeliveryTimeline:
    delivery: Delivery
    entries: list[TimelineEntry]
    # The deliveries made by resending this one (with their notification).
    resends: list[Delivery]
    # The address's entry on the suppression list, if it has one now.
    suppression: Suppression | None


@dataclass
class NotificationTimeline:
    """A notification as staff follow it: its request (caller, category, template, idempotency
    key), each of its deliveries with their events in order, and the resends either way."""

    notification: Notification
    request: NotificationRequest
    deliveries: list[DeliveryTimeline]
    # The delivery this notification's request resends (with its notification), if any.
    resent_from: Delivery | None
    # How many recipients the request has in all (this notification is one).
    recipients: int


# The times a delivery row keeps, and the event that records the same moment.
_STAMPS = (
    ("queued_at", "queued"),
    ("sent_at", "sent"),
    ("delivered_at", "delivered"),
    ("failed_at", "failed"),
    ("cancelled_at", "cancelled"),
)


def notification_timeline(notification_id: uuid.UUID | str) -> NotificationTimeline:
    """The timeline of one notification, in a fixed number of queries whatever its deliveries
    and events: the notification with its request, its deliveries, their events, their resends,
    the suppressions of their addresses, the request's recipient count. Raises NotFoundError."""
    as_uuid = _uuid_or_none(str(notification_id))
    notification = (
        Notification.objects.select_related(
            "request", "request__resent_from", "request__resent_from__notification", "user"
        )
        .filter(id=as_uuid)
        .first()
        if as_uuid is not None
        else None
    )
    if notification is None:
        raise NotFoundError("No such notification.")
    request = notification.request
    deliveries = list(Delivery.objects.filter(notification=notification).order_by("id"))
    ids = [d.id for d in deliveries]
    by_delivery: dict[uuid.UUID, list[Event]] = {i: [] for i in ids}
    for event in Event.objects.filter(delivery_id__in=ids).order_by("occurred_at", "id"):
        by_delivery[event.delivery_id].append(event)  # type: ignore[index]  # filtered on it
    resends: dict[uuid.UUID, list[Delivery]] = {i: [] for i in ids}
    for resend in (
        Delivery.objects.filter(notification__request__resent_from__in=ids)
        .select_related("notification__request")
        .order_by("id")
    ):
        origin = resend.notification.request.resent_from_id
        resends[origin].append(resend)  # type: ignore[index]  # filtered on it
    pairs = {(d.channel, suppression_hash(d.address)): d.address for d in deliveries if d.address}
    suppressed = {}
    if pairs:
        either = Q(pk__in=[])
        for channel, address_hash in pairs:
            either |= Q(channel=channel, address_hash=address_hash)
        suppressed = {
            (s.channel, pairs[(s.channel, s.address_hash)]): s
            for s in Suppression.objects.filter(either)
        }
    recipients = Notification.objects.filter(request_id=request.id).count()
    return NotificationTimeline(
        notification=notification,
        request=request,
        deliveries=[
            DeliveryTimeline(
                delivery=d,
                entries=_entries(d, by_delivery[d.id]),
                resends=resends[d.id],
                suppression=suppressed.get((d.channel, d.address)),
            )
            for d in deliveries
        ],
        resent_from=request.resent_from,
        recipients=recipients,
    )


def _entries(delivery: Delivery, found: list[Event]) -> list[TimelineEntry]:
    entries = [
        TimelineEntry(
            at=e.occurred_at,
            type=e.type,
            provider=e.provider,
            latency_ms=e.latency_ms,
            details=_details(e.data),
            resent_as=_uuid_or_none(str(e.data.get("as", ""))) if e.type == "resent" else None,
        )
        for e in found
    ]
    recorded = {e.type for e in found}
    for stamp, type_ in _STAMPS:
        at = getattr(delivery, stamp)
        if at is not None and type_ not in recorded:
            entries.append(TimelineEntry(at=at, type=type_, details=[("from", "the delivery row")]))
    if delivery.sending_at is not None:
        # No event marks an attempt's start; the row keeps the latest one.
        entries.append(
            TimelineEntry(
                at=delivery.sending_at,
                type="sending",
                details=[("attempt", f"{delivery.attempts} (the latest)")],
            )
        )
    upcoming = {
        "scheduled": ("due", delivery.scheduled_for),
        "held": ("digest due", delivery.scheduled_for),
        "queued": ("next attempt", delivery.next_attempt_at),
        "sending": ("lease ends", delivery.lease_until),
    }.get(delivery.status)
    if upcoming is not None and upcoming[1] is not None:
        entries.append(TimelineEntry(at=upcoming[1], type=upcoming[0], upcoming=True))
    # Stable: events keep their recorded order among equal times, stamps come after them.
    return sorted(entries, key=lambda e: e.at)


def _details(data: dict[str, Any]) -> list[tuple[str, str]]:
    """An event's data as label and text pairs (people read this, not JSON)."""
    out = []
    for key, value in (data or {}).items():
        if value in (None, "", {}, []):
            continue
        if isinstance(value, dict):
            text = "; ".join(
                f"{k}: {_short(v.get('status', v) if isinstance(v, dict) else v)}"
                for k, v in value.items()
            )
        elif isinstance(value, list):
            text = ", ".join(_short(v) for v in value)
        else:
            text = _short(value)
        out.append((key.replace("_", " "), text))
    return out


def _short(value: Any, limit: int = 300) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
