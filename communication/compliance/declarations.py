"""The core app's personal data: the user's profile, the realtime event log, the identity
service's cached profile, and the console's own change log."""

from __future__ import annotations

from django.core.cache import cache
from django.db.models import Q

from communication.compliance.registry import Erase, PersonalData, Subject, register


def _user_rows(subject: Subject) -> Q:
    return Q(pk__in=subject.users)


def _realtime_rows(subject: Subject) -> Q:
    # The subject's own log, and the copies other people's logs hold of what the subject said or
    # did: every such payload names the subject's user id.
    q = Q(user__in=subject.users)
    for user_id in subject.user_ids:
        q |= Q(data__icontains=f'"{user_id}"')
    return q


def _admin_log_rows(subject: Subject) -> Q:
    # The console's change log repeats an object's str(), which may be a name or an address.
    q = Q(object_id__in=[str(pk) for pk in subject.users])
    for value in (*subject.user_ids, *subject.emails, *subject.phones):
        q |= Q(object_repr__icontains=value)
    return q


def _identity_cache(subject: Subject) -> int:
    from communication import identity  # noqa: PLC0415

    keys = [identity._profile_key(user_id) for user_id in subject.user_ids]
    found = [key for key in keys if cache.has_key(key)]
    if found:
        cache.delete_many(found)
    return len(found)


def _audit_expire(before) -> int:
    # The trail's own anchored removal (the only path past its append-only trigger).
    from communication import audit  # noqa: PLC0415

    return audit.audit_expire(before)


def _rate_limit_buckets(subject: Subject) -> int:
    """The subject's rate-limit buckets (keyed by the user's primary key, one per group)."""
    if not subject.users:
        return 0
    import redis  # noqa: PLC0415
    from django.conf import settings  # noqa: PLC0415

    from communication import ratelimit  # noqa: PLC0415

    keys = [ratelimit.key_for(group, str(pk)) for pk in subject.users for group in ratelimit.GROUPS]
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)
    try:
        return client.delete(*keys)
    finally:
        client.close()


def _erased_username(pk) -> str:
    return f"erased-{pk}"


register(
    # Not a person's data to erase (entries name no one beyond an id), but kept only so long.
    PersonalData(
        name="communication.audit",
        model="communication.AuditEntry",
        rows=None,
        erase=Erase.DELETE,
        retention="audit",
        age_field="at",
        expirer=_audit_expire,
    ),
    PersonalData(
        name="communication.realtime_events",
        model="communication.RealtimeEvent",
        rows=_realtime_rows,
        erase=Erase.DELETE,
        retention="realtime",
    ),
    PersonalData(
        name="communication.admin_log",
        model="admin.LogEntry",
        rows=_admin_log_rows,
        erase=Erase.ANONYMISE,
        fields={"object_repr": "[erased]"},
    ),
    PersonalData(
        name="communication.identity_cache",
        model="communication.User",
        rows=None,
        erase=Erase.DELETE,
        eraser=_identity_cache,
    ),
    PersonalData(
        name="communication.rate_limits",
        model="communication.User",
        rows=None,
        erase=Erase.DELETE,
        eraser=_rate_limit_buckets,
    ),
    # Last: the other apps find the subject's rows through the user while they erase.
    PersonalData(
        name="communication.profile",
        model="communication.User",
        rows=_user_rows,
        erase=Erase.ANONYMISE,
        # The row stays (messages and conversations point at it), under a name that no token
        # names: a person who comes back with a new token starts as a new, empty profile.
        fields={
            "external_id": None,
            "username": _erased_username,
            "email": "",
            "first_name": "",
            "last_name": "",
            "name": "",
            "phone": "",
            "locale": "",
            "timezone": "",
            "organization": "",
            "roles": [],
            "attributes": {},
            "is_active": False,
            "password": "!",
        },
        export=(
            "external_id",
            "email",
            "name",
            "phone",
            "locale",
            "timezone",
            "organization",
            "roles",
            "attributes",
            "created_at",
        ),
        order=1000,
    ),
)
