"""Every page of the staff console, opened in headless Chromium by a logged-in staff member.

Each model the console registers is listed and one of its rows opened (its add page too, where it
has one), along with every page of its own the console adds (dashboard, provider health, send test,
timelines, diffs …): each answers without a server error, logs no JavaScript error, has a title of its
own (never "… object (…)") and fits the window (1440 px). The URLs are read from the admin site itself,
so a page added later is opened too, and a model with no row to open fails the test until it is
seeded here.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.test import Client, RequestFactory, override_settings
from django.urls import URLPattern, URLResolver, reverse
from django.utils import timezone
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)

from campaigns import services as campaigns
from campaigns.services import lists
from communication import audit, organizations
from communication.models import Organization, User
from conftest import STAFF_PASSWORD, StaffBrowser, chromium, needs_chromium, wait_for
from messaging import services as messaging
from notifications import services as notifications
from notifications.models import (
    Consent,
    Delivery,
    Device,
    NotificationPreference,
    QuietHours,
    Suppression,
)
from notifications.services import digests, webhooks

pytestmark = [needs_chromium, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


# Admin URLs that are not pages: the site's plumbing, or a verb a page posts to.
NOT_PAGES = {"logout", "password_change_done", "jsi18n", "autocomplete", "search", "view_on_site"}


@dataclass
class Page:
    path: str
    # Pages of the console itself must answer 200; a custom per-object view may answer a GET
    # with a refusal (it wants a POST) but never with a server error.
    must_be_ok: bool = True


def seed() -> None:
    """One row, at least, of everything the console lists, made the way the service makes it."""
    User.objects.create_superuser("console-admin", "console-admin@example.com", STAFF_PASSWORD)
    alice = User.objects.create(
        username="alice-console",
        external_id="alice-console",
        name="Alice Console",
        email="alice-console@example.com",
        phone="+33612345678",
    )
    agent = User.objects.create(
        username="agent-console",
        external_id="agent-console",
        name="Agent Console",
        email="agent-console@example.com",
        roles=["support_agent"],
    )
    Group.objects.create(name="Support staff")
    acme = organizations.organization_save(organization=Organization(id="acme", name="Acme"))
    organizations.organization_save(
        organization=Organization(id="acme-emea", name="EMEA", parent=acme, direct_scope="tree")
    )
    audit.audit_record("group.create", "auth.group", "Support staff")

    # A service's webhook endpoint, before the sends so that their events reach it (the worker
    # refuses the loopback address: its log shows failed attempts).
    with override_settings(WEBHOOKS_ALLOW_PRIVATE=True):
        webhooks.endpoint_create(
            owner="console-test",
            scopes=["webhooks:manage"],
            url="http://127.0.0.1:9/hooks",
            events=["delivery.sent", "delivery.delivered", "notification.read"],
        )

    outcome = notifications.notification_send(
        caller="console-test",
        payload={
            "recipients": [{"user_id": "alice-console"}],
            "category": "alerts",
            "channels": ["email", "sms"],
            "content": {"subject": "Hello", "body": "Your code is 4242.", "html": "<p>4242</p>"},
            "data": {},
        },
        idempotency_key="console-every-page",
    )
    ids = [d["id"] for d in outcome.body["notifications"][0]["deliveries"]]
    wait_for(
        lambda: Delivery.objects.filter(id__in=ids, status="delivered").count() == len(ids),
        30,
        what="the seeded deliveries",
    )
    NotificationPreference.objects.create(
        user=alice, category_id="marketing", channel="email", enabled=False
    )
    # A digest: a send held for alice's hourly email digest, released.
    NotificationPreference.objects.create(
        user=alice, category_id="alerts", channel="email", enabled=True, mode="hourly"
    )
    held = notifications.notification_send(
        caller="console-test",
        payload={
            "recipients": [{"user_id": "alice-console"}],
            "category": "alerts",
            "channels": ["email"],
            "content": {"subject": "Held", "body": "For the digest."},
        },
    )
    due = held.body["notifications"][0]["deliveries"][0]["scheduled_for"]
    digests.digests_release_due(now=dt.datetime.fromisoformat(due))
    QuietHours.objects.create(user=alice, start=dt.time(22), end=dt.time(7))
    Consent.objects.create(user=alice, category_id="marketing", granted=True, source="signup")
    Suppression.objects.create(channel="email", address="bounced@example.com", reason="bounce")
    Device.objects.create(
        user=alice,
        platform="web",
        endpoint=f"https://fcm.googleapis.com/fcm/send/{uuid.uuid4().hex}",
        p256dh="BAAA",
        auth="AAAA",
        browser="chrome",
    )

    conversation, _ = messaging.conversation_create(
        user=alice, type="support", participants=[], title="Billing question"
    )
    messaging.support_assign(conversation=conversation, agent=agent)
    message, _ = messaging.message_send(
        user=alice, conversation_id=conversation.id, content="My invoice is wrong."
    )
    messaging.message_edit(user=alice, message_id=message.id, content="My March invoice is wrong.")

    segment = campaigns.segment_create(
        actor="staff:console-admin",
        name="French speakers who opened lately",
        rules={
            "all": [
                {"field": "locale", "op": "in", "value": ["fr", "fr-CA"]},
                {"field": "event.opened", "op": "within_days", "value": 30},
            ]
        },
    )

    campaigns.campaign_create(
        actor="staff:console-admin",
        name="Spring news",
        category="marketing",
        channels=["email"],
        segment=segment,
        steps=[
            {"content": {"subject": "Spring", "body": "Hello {{ name|default('you') }}"}},
            {
                "content": {"subject": "Reminder", "body": "Still spring"},
                "delay": 86400,
                "condition": {"previous": "not_opened"},
            },
        ],
    )

    members = lists.static_list_create(actor="staff:console-admin", name="VIP customers")
    lists.members_add(
        static_list=members, rows=[{"email": "vip@example.com", "data": {"first_name": "Ada"}}]
    )

    every_minute, _ = IntervalSchedule.objects.get_or_create(every=1, period="minutes")
    CrontabSchedule.objects.create(minute="0", hour="3")
    SolarSchedule.objects.create(event="sunrise", latitude=48.85, longitude=2.35)
    ClockedSchedule.objects.create(clocked_time=timezone.now() + dt.timedelta(days=1))
    PeriodicTask.objects.get_or_create(
        name="console-test-sweep",
        defaults={"task": "notifications.tasks.sweep", "interval": every_minute},
    )
    # A good login, then a failed one: django-axes' access and attempt rows.
    for username, password in (("console-admin", STAFF_PASSWORD), ("someone", "wrong")):
        Client().post(reverse("admin:login"), {"username": username, "password": password})


def _named(patterns):
    """(name, converters) of each named URL pattern, nested includes flattened."""
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _named(entry.url_patterns)
        elif isinstance(entry, URLPattern) and entry.name:
            route = str(entry.pattern)
            converters = set(getattr(entry.pattern, "converters", {}))
            if "(?P" in route:  # a regex route names its arguments in the regex
                converters.add("?")
            yield entry.name, converters


def pages() -> list[Page]:
    request = RequestFactory().get("/admin/")
    request.user = User.objects.get(username="console-admin")
    found: dict[str, Page] = {}

    def add(path: str, must_be_ok: bool = True) -> None:
        found.setdefault(path, Page(path, must_be_ok))

    missing = []
    for model, model_admin in admin.site._registry.items():
        prefix = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        add(reverse(f"{prefix}_changelist"))
        if model_admin.has_add_permission(request):
            add(reverse(f"{prefix}_add"))
        row = model._default_manager.order_by("pk").first()
        if row is None:
            missing.append(model._meta.label)
            continue
        for name, converters in _named(model_admin.get_urls()):
            if name.endswith(("_delete", "_add", "_changelist")):
                continue
            if converters == {"object_id"}:
                standard = name.endswith(("_change", "_history"))
                add(reverse(f"admin:{name}", kwargs={"object_id": row.pk}), must_be_ok=standard)
            elif not converters:
                # django-import-export's second step takes the form the first one posts.
                add(reverse(f"admin:{name}"), must_be_ok=not name.endswith("_process_import"))
    assert not missing, f"no row to open for {missing}: seed one"
    site_own = [p for p in admin.site.get_urls() if isinstance(p, URLPattern)]
    for name, converters in _named(site_own):
        if not converters and name not in NOT_PAGES | {"login"}:
            add(reverse(f"admin:{name}"))
    return sorted(found.values(), key=lambda page: page.path)


def test_every_console_page_opens_cleanly(live_asgi, celery_worker):
    seed()
    to_open = pages()
    problems: list[str] = []
    opened = 0
    with chromium() as browser:
        staff = StaffBrowser(browser, live_asgi.url, "console-admin")
        page, errors = staff.page, staff.errors

        for target in to_open:
            errors.clear()
            if not target.must_be_ok:
                # A view that wants a POST refuses a GET (405, no page to render): only a
                # server error is a defect there.
                status = page.request.get(target.path, max_redirects=0).status
                if status >= 500:
                    problems.append(f"{target.path}: {status}")
                if status != 200:
                    continue
            response = page.goto(target.path)
            assert response is not None
            status = response.status
            opened += 1
            if status != 200:
                problems.append(f"{target.path}: {status}")
                continue
            title = page.title()
            overflow = page.evaluate(
                "() => document.documentElement.scrollWidth - window.innerWidth"
            )
            if errors:
                problems.append(f"{target.path}: JavaScript errors {errors}")
            if " object (" in title or not title.strip():
                problems.append(f"{target.path}: title {title!r}")
            if overflow > 0:
                problems.append(f"{target.path}: {overflow} px wider than the window")
    assert opened > 60, opened
    assert not problems, "\n".join(problems)
