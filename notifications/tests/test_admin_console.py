"""The Notifications pages of the staff console, server side: the delivery log's exact search and
filters, a notification's timeline (and its query count), cancel and resend through the services,
"send a test" of a template version, the read-only pages of record and the People pages.

What a person clicks is proven in Chromium in ``test_admin_browser.py``; here each behaviour is
pinned down with the Django test client against the real database.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from analytics.models import Event
from communication.compliance.keyed import lookup_hash
from communication.models import User
from notifications import selectors, services
from notifications.models import (
    Delivery,
    Notification,
    NotificationRequest,
    OutboxMessage,
    Suppression,
    suppression_hash,
)
from templates_app import services as template_services
from templates_app.models import Template, TemplateVersion

pytestmark = pytest.mark.django_db

SENDGRID = "/sendgrid/v3/mail/send"


@pytest.fixture
def staff(db):
    return User.objects.create_superuser(username="ops", email="ops@example.com", password="pw")


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


@pytest.fixture(autouse=True)
def _nothing_consumes_the_queues(settings):
    settings.CELERY_QUEUE_PREFIX = "void-"


def send(recipient: dict, *, channels=("email",), key: str = "", caller: str = "billing", **extra):
    outcome = services.notification_send(
        caller=caller,
        idempotency_key=key,
        payload={
            "recipients": [recipient],
            "category": "alerts",
            "channels": list(channels),
            "content": {"subject": "Your invoice", "body": "Invoice {{ n }}"},
            "data": {"n": 42},
            **extra,
        },
    )
    notification = outcome.body["notifications"][0]
    return outcome.body["request_id"], notification["id"], notification["deliveries"]


def rows(response) -> list[str]:
    """The delivery ids of a changelist page's rows (each row links its timeline)."""
    return re.findall(r"#delivery-([0-9a-f-]{36})", response.content.decode())


def title(response) -> str:
    return re.search(r"<title>\s*(.*?)\s*</title>", response.content.decode(), re.S).group(1)


def fail(delivery_id, error: str = "sendgrid: 400 rejected") -> None:
    # What a provider's permanent refusal leaves behind (the worker's path is tested elsewhere).
    Delivery.objects.filter(id=delivery_id).update(
        status="failed", failed_at=timezone.now(), error=error, provider="sendgrid"
    )


# ------------------------------------------------------------------------------ the delivery log


def test_the_delivery_log_finds_deliveries_by_exact_values_only(staff_client, make_user_token):
    make_user_token("cust-9", email="cust9@example.com")
    req_a, _, [a] = send({"user_id": "cust-9"}, key="order-77")
    _, notification_b, [b] = send({"email": "Support.Case@Example.com"})
    _, _, [c] = send({"phone": "+33612345678"}, channels=("sms",))
    _, _, [other] = send({"email": "someone@example.com"})

    def search(term):
        response = staff_client.get("/admin/notifications/delivery/", {"q": term})
        assert response.status_code == 200
        return set(rows(response))

    assert search("support.case@example.com") == {b["id"]}
    assert search("SUPPORT.CASE@example.com") == {b["id"]}, "addresses are stored lower-cased"
    assert search("+33612345678") == {c["id"]}
    assert search("cust-9") == {a["id"]}, "a user id"
    assert search(req_a) == {a["id"]}, "a request id"
    assert search("order-77") == {a["id"]}, "an idempotency key"
    assert search(b["id"]) == {b["id"]}, "a delivery id"
    assert search(notification_b) == {b["id"]}, "a notification id"
    # Exact values only: addresses will be stored as keyed hashes, which match nothing partial.
    assert search("support.case") == set()
    assert search("example.com") == set()
    assert search("order-7") == set()
    assert other["id"] in search("")


def test_the_delivery_log_filters_and_stays_on_a_bounded_query_count(
    staff_client, django_assert_max_num_queries
):
    deliveries = [send({"email": f"u{i}@example.com"})[2][0]["id"] for i in range(30)]
    fail(deliveries[0])
    with django_assert_max_num_queries(12):
        page = staff_client.get("/admin/notifications/delivery/", {"status__exact": "failed"})
    assert set(rows(page)) == {deliveries[0]}
    assert b"sendgrid: 400 rejected" in page.content
    assert set(rows(staff_client.get("/admin/notifications/delivery/?provider=sendgrid"))) == {
        deliveries[0]
    }
    # Created between two dates (inclusive), on the time-ordered ids.
    today = timezone.localdate()
    within = staff_client.get(
        "/admin/notifications/delivery/",
        {"created_at_from": today.isoformat(), "created_at_to": today.isoformat()},
    )
    assert len(rows(within)) == 30
    yesterday = (today - dt.timedelta(days=1)).isoformat()
    before = staff_client.get(
        "/admin/notifications/delivery/",
        {"created_at_from": yesterday, "created_at_to": yesterday},
    )
    assert rows(before) == []
    with django_assert_max_num_queries(15):
        found = staff_client.get("/admin/notifications/delivery/", {"q": "u3@example.com"})
    assert set(rows(found)) == {deliveries[3]}


@pytest.mark.parametrize(
    "page", ["delivery", "notification", "notificationrequest", "outboxmessage"]
)
def test_a_list_costs_the_same_queries_for_one_row_as_for_a_page(staff_client, page):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert staff_client.get(f"/admin/notifications/{page}/").status_code == 200
        return len(captured)

    _, _, [d] = send({"email": "first@example.com"})
    services.delivery_attempt(d["id"])
    one = queries()
    for i in range(30):
        services.delivery_attempt(send({"email": f"more{i}@example.com"})[2][0]["id"])
    assert queries() == one <= 5


def test_the_notifications_list_titles_every_row_and_searches_the_same_way(staff_client):
    _, email_only, _ = send({"email": "mail-only@example.com"})
    page = staff_client.get("/admin/notifications/notification/", {"q": "mail-only@example.com"})
    assert page.status_code == 200
    # An email-only send keeps no inbox title: the row says what was sent instead.
    assert Notification.objects.get(id=email_only).title == ""
    assert b"alerts (inline)" in page.content
    assert email_only.encode() in page.content
    detail = staff_client.get(f"/admin/notifications/notification/{email_only}/change/")
    assert title(detail).startswith("alerts to mail-only@example.com |")


# ----------------------------------------------------------------------------------- timeline


def test_a_timeline_reads_in_the_same_queries_however_much_happened(
    staff_client, django_assert_num_queries, make_user_token
):
    _, small, _ = send({"email": "small@example.com"})
    make_user_token("busy", email="busy@example.com", phone="+33611111111")
    _, big, deliveries = send({"user_id": "busy"}, channels=("email", "sms", "in_app"))
    services.deliveries_attempt([d["id"] for d in deliveries])
    for d in deliveries:
        for attempt in range(5):
            Event.objects.create(
                type="retry", delivery_id=d["id"], provider="sendgrid", data={"attempt": attempt}
            )
    # The notification and request, deliveries, events, resends, suppressions, recipients.
    with django_assert_num_queries(6):
        timeline = selectors.notification_timeline(small)
    assert [e.type for e in timeline.deliveries[0].entries] == ["queued"]
    with django_assert_num_queries(6):
        timeline = selectors.notification_timeline(big)
    assert len(timeline.deliveries) == 3
    assert all(len(line.entries) >= 7 for line in timeline.deliveries)

    def page_queries(notification_id) -> int:
        with CaptureQueriesContext(connection) as queries:
            response = staff_client.get(
                f"/admin/notifications/notification/{notification_id}/timeline/"
            )
        assert response.status_code == 200
        return len(queries)

    assert page_queries(small) == page_queries(big) <= 10
    page = staff_client.get(f"/admin/notifications/notification/{big}/timeline/")
    text = page.content.decode()
    assert "Request" in text and "billing" in text
    for d in deliveries:
        assert f'id="delivery-{d["id"]}"' in text
    assert "attempt:</span> 4" in text


def test_the_timeline_shows_the_request_and_each_event_in_order(staff_client):
    _, notification_id, [d] = send({"email": "order@example.com"}, key="k-1")
    services.delivery_attempt(d["id"])
    page = staff_client.get(f"/admin/notifications/notification/{notification_id}/timeline/")
    text = page.content.decode()
    assert "billing" in text and "k-1" in text and "Your invoice" in text
    section = text[text.index(f'id="delivery-{d["id"]}"') :]
    order = [m for m in re.findall(r'data-type="([a-z ]+)"', section)]
    assert order[:4] == ["queued", "sending", "sent", "delivered"]
    assert "outbox" in section
    missing = staff_client.get(f"/admin/notifications/notification/{uuid.uuid4()}/timeline/")
    assert missing.status_code == 404


# ---------------------------------------------------------------------------------------- cancel


def test_cancel_stops_what_is_not_yet_sent_and_records_who(staff_client):
    later = timezone.now() + dt.timedelta(days=1)
    _, notification_id, [scheduled] = send({"email": "later@example.com"}, scheduled_at=later)
    timeline = f"/admin/notifications/notification/{notification_id}/timeline/"
    page = staff_client.get(timeline)
    assert f'action="/admin/notifications/delivery/{scheduled["id"]}/cancel/"' in (
        page.content.decode()
    )
    assert (
        staff_client.get(f"/admin/notifications/delivery/{scheduled['id']}/cancel/").status_code
        == 405
    )

    response = staff_client.post(
        f"/admin/notifications/delivery/{scheduled['id']}/cancel/", {"next": timeline}
    )
    assert response.status_code == 302 and response["Location"] == timeline
    delivery = Delivery.objects.get(id=scheduled["id"])
    assert delivery.status == "cancelled" and delivery.cancelled_at is not None
    event = Event.objects.get(delivery_id=scheduled["id"], type="cancelled")
    assert event.data == {"by": "admin:ops", "reason": "cancelled by admin:ops"}
    assert event.caller == "billing"
    after = staff_client.get(timeline).content.decode()
    assert "/cancel/" not in after, "nothing left to cancel"

    # Something already sent is left alone.
    _, _, [sent] = send({"email": "gone@example.com"})
    services.delivery_attempt(sent["id"])
    staff_client.post(f"/admin/notifications/delivery/{sent['id']}/cancel/")
    assert Delivery.objects.get(id=sent["id"]).status == "delivered"


def test_cancel_a_whole_notification_and_from_the_log(staff_client, make_user_token):
    make_user_token("two", email="two@example.com", phone="+33622222222")
    later = timezone.now() + dt.timedelta(days=1)
    _, notification_id, _ = send({"user_id": "two"}, channels=("email", "sms"), scheduled_at=later)
    page = staff_client.get(f"/admin/notifications/notification/{notification_id}/timeline/")
    assert b"Cancel all not yet sent" in page.content
    staff_client.post(f"/admin/notifications/notification/{notification_id}/cancel/")
    assert set(
        Delivery.objects.filter(notification_id=notification_id).values_list("status", flat=True)
    ) == {"cancelled"}

    _, _, [queued] = send({"email": "queued@example.com"})
    response = staff_client.post(
        "/admin/notifications/delivery/",
        {"action": "cancel_selected", "_selected_action": [queued["id"]]},
    )
    assert response.status_code == 302
    assert Delivery.objects.get(id=queued["id"]).status == "cancelled"


def test_cancel_and_resend_need_their_permissions(client, db):
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(
        *Permission.objects.filter(
            codename__in=["view_delivery", "view_notification", "view_notificationrequest"]
        )
    )
    client.force_login(viewer)
    _, notification_id, [d] = send(
        {"email": "p@example.com"}, scheduled_at=timezone.now() + dt.timedelta(days=1)
    )
    page = client.get(f"/admin/notifications/notification/{notification_id}/timeline/")
    assert page.status_code == 200 and b"/cancel/" not in page.content
    assert client.post(f"/admin/notifications/delivery/{d['id']}/cancel/").status_code == 403
    assert client.post(f"/admin/notifications/delivery/{d['id']}/resend/").status_code == 403
    assert Delivery.objects.get(id=d["id"]).status == "scheduled"


# ---------------------------------------------------------------------------------------- resend


def test_resend_makes_a_new_request_linked_both_ways(
    staff_client, settings, httpserver, django_capture_on_commit_callbacks
):
    settings.NOTIFICATION_PROVIDERS = {
        **settings.NOTIFICATION_PROVIDERS,
        "sendgrid": {
            "BACKEND": "notifications.providers.sendgrid.SendGridEmailProvider",
            "OPTIONS": {"API_KEY": "SG.k", "API_URL": httpserver.url_for("/sendgrid/v3/")},
        },
    }
    settings.EMAIL_PROVIDERS = ["sendgrid"]
    httpserver.expect_oneshot_request(SENDGRID).respond_with_data("bad request", status=400)
    httpserver.expect_request(SENDGRID).respond_with_data("", status=202)
    request_id, notification_id, [d] = send({"email": "retry@example.com"}, key="inv-1")
    assert services.delivery_attempt(d["id"]) == "failed"
    original = Delivery.objects.get(id=d["id"])
    assert original.status == "failed" and "400" in original.error

    timeline = f"/admin/notifications/notification/{notification_id}/timeline/"
    assert (
        f"/admin/notifications/delivery/{d['id']}/resend/"
        in staff_client.get(timeline).content.decode()
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            f"/admin/notifications/delivery/{d['id']}/resend/", {"next": timeline}, follow=True
        )
    assert b"Resent as" in response.content

    new_request = NotificationRequest.objects.get(resent_from=original)
    new = Delivery.objects.select_related("notification").get(notification__request=new_request)
    old_request = NotificationRequest.objects.get(id=request_id)
    assert new_request.caller == "admin:ops"
    assert (new_request.category_id, new_request.content, new_request.data) == (
        old_request.category_id,
        old_request.content,
        old_request.data,
    )
    assert new_request.idempotency_key == "", "a resend is not a replay of the caller's key"
    assert (new.channel, new.address, new.notification.recipient) == (
        "email",
        "retry@example.com",
        {"email": "retry@example.com"},
    )
    assert new.status == "queued"
    resent = Event.objects.get(delivery_id=original.id, type="resent")
    assert resent.data == {"by": "admin:ops", "as": str(new.id)}
    assert Event.objects.filter(delivery_id=new.id, type="queued").exists()

    # Sent through the same pipeline: the provider is called with the original's content.
    assert services.delivery_attempt(new.id) == "sent"
    body = json.loads(httpserver.log[-1][0].get_data())
    assert body["personalizations"][0]["to"][0]["email"] == "retry@example.com"
    assert body["subject"] == "Your invoice"

    # Both timelines show the link; a second click does not send it a third time.
    old_page = staff_client.get(timeline).content.decode()
    assert "Resent as" in old_page and str(new.id) in old_page
    assert f"/delivery/{d['id']}/resend/" not in old_page
    new_page = staff_client.get(
        f"/admin/notifications/notification/{new.notification_id}/timeline/"
    ).content.decode()
    assert 'id="resend-of"' in new_page and str(original.id) in new_page
    again = staff_client.post(f"/admin/notifications/delivery/{d['id']}/resend/", follow=True)
    assert b"Already resent as delivery" in again.content
    assert NotificationRequest.objects.filter(resent_from=original).count() == 1


def test_resend_follows_the_rules_of_a_send_and_says_so(staff_client):
    _, notification_id, [d] = send({"email": "bounced@example.com"})
    fail(d["id"], "sendgrid: hard bounce")
    services.suppression_add(channel="email", address="bounced@example.com", reason="hard_bounce")
    page = staff_client.get(f"/admin/notifications/notification/{notification_id}/timeline/")
    assert b"is on the suppression list" in page.content
    response = staff_client.post(f"/admin/notifications/delivery/{d['id']}/resend/", follow=True)
    new = Delivery.objects.get(notification__request__resent_from_id=d["id"])
    assert new.status == "suppressed"
    assert b"suppressed by the send rules" in response.content


def test_only_a_failed_delivery_is_resent(staff_client):
    _, _, [d] = send({"email": "fine@example.com"})
    response = staff_client.post(f"/admin/notifications/delivery/{d['id']}/resend/", follow=True)
    assert b"Only a failed delivery can be resent" in response.content
    assert not NotificationRequest.objects.filter(resent_from_id=d["id"]).exists()


# ---------------------------------------------------------------------------------- send a test


@pytest.fixture
def draft(db):
    template = Template.objects.get(key="welcome-email")
    live = TemplateVersion.objects.get(template=template, is_live=True, language="en")
    version = template_services.version_create(
        template=template,
        actor="staff:writer",
        language="en",
        subject="Draft hello {{ name }}",
        html="<p>Draft for {{ name }} at {{ product }} {% raw %}{{ kept }}{% endraw %}</p>",
        text="Draft for {{ name }}",
    )
    return version, live


@pytest.mark.parametrize("version_id", ["zzz", "00000000-0000-0000-0000-000000000000", "1" * 300])
def test_send_a_test_of_a_version_that_is_not_there_is_a_404(staff_client, version_id):
    url = "/admin/notifications/delivery/send-test/"
    assert staff_client.get(url, {"template_version": version_id}).status_code == 404
    assert staff_client.post(url, {"template_version": version_id}).status_code == 404


def test_send_a_test_of_a_draft_version_renders_its_examples(staff_client, draft):
    version, live = draft
    url = f"/admin/notifications/delivery/send-test/?template_version={version.pk}"
    page = staff_client.get(url)
    text = page.content.decode()
    assert page.status_code == 200
    assert "welcome-email" in text and "Draft" in text and ">en<" in text
    assert "Draft hello Ada" in text, "rendered with the variables' examples"
    assert 'value="ops@example.com"' in text, "to: the staff member's own email"

    response = staff_client.post(
        url, {"template_version": str(version.pk), "channel": "email", "to": "ops@example.com"}
    )
    assert response.status_code == 302 and "/timeline/" in response["Location"]
    delivery = Delivery.objects.get(address_hash=lookup_hash("ops@example.com"))
    services.delivery_attempt(delivery.id)
    sent = OutboxMessage.objects.get(to_hash=lookup_hash("ops@example.com"))
    assert sent.subject == "Draft hello Ada"
    assert "Draft for Ada at Acme {{ kept }}" in sent.html, "sent as rendered, not rendered again"
    # The live version is neither used nor replaced.
    live.refresh_from_db()
    version.refresh_from_db()
    assert live.is_live and version.status == "draft" and not version.is_live


def test_send_a_test_typed_in_the_form(staff_client):
    response = staff_client.post(
        "/admin/notifications/delivery/send-test/",
        {"channel": "sms", "to": "+33 6 12 34 56 78", "subject": "Hi", "body": "Test"},
    )
    assert response.status_code == 302
    assert Delivery.objects.get(address_hash=lookup_hash("+33612345678")).channel == "sms"


# ---------------------------------------------------------------------- pages of record, people


def test_outbox_messages_are_titled_readable_and_read_only(staff_client):
    _, _, [d] = send({"email": "outbox@example.com"})
    services.delivery_attempt(d["id"])
    message = OutboxMessage.objects.get(to_hash=lookup_hash("outbox@example.com"))
    page = staff_client.get(f"/admin/notifications/outboxmessage/{message.id}/change/")
    text = page.content.decode()
    assert "OutboxMessage object" not in text
    assert title(page).startswith("email to outbox@example.com: Your invoice |")
    assert 'name="_save"' not in text
    assert "List-Unsubscribe" in text and '{"' not in text and "{&quot;" not in text
    assert (
        staff_client.post(
            f"/admin/notifications/outboxmessage/{message.id}/change/", {}
        ).status_code
        == 403
    )


@pytest.mark.parametrize("model", ["delivery", "notification", "notificationrequest"])
def test_the_pipeline_pages_have_nothing_to_save(staff_client, model):
    request_id, notification_id, [d] = send({"email": "ro@example.com"})
    pk = {"delivery": d["id"], "notification": notification_id, "notificationrequest": request_id}[
        model
    ]
    page = staff_client.get(f"/admin/notifications/{model}/{pk}/change/")
    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    assert staff_client.get(f"/admin/notifications/{model}/add/").status_code == 403
    assert b"object (" not in page.content


def test_people_pages_search_by_exact_user_id(staff_client, make_user_token):
    user = make_user_token("person-1") and User.objects.get(external_id="person-1")
    services.preferences_set(
        user=user, changes=[{"category": "alerts", "channel": "email", "enabled": False}]
    )
    services.consent_record(user=user, granted=True, source="signup", channel="email")
    for page in ("notificationpreference", "consent", "device", "quiethours", "suppression"):
        with CaptureQueriesContext(connection) as queries:
            response = staff_client.get(f"/admin/notifications/{page}/", {"q": "person-1"})
        assert response.status_code == 200, page
        assert len(queries) <= 6, page
        assert b'name="_save"' not in response.content
    prefs = staff_client.get("/admin/notifications/notificationpreference/", {"q": "person-1"})
    assert b"person-1" in prefs.content
    assert (
        b"person-1"
        not in staff_client.get(
            "/admin/notifications/notificationpreference/", {"q": "person"}
        ).content
    )


def test_suppressions_are_added_and_removed_through_the_services(staff_client):
    response = staff_client.post(
        "/admin/notifications/suppression/add/",
        {"channel": "email", "address": " Blocked@Example.com ", "reason": "manual", "detail": ""},
    )
    assert response.status_code == 302
    suppression = Suppression.objects.get(address_hash=suppression_hash("blocked@example.com"))
    found = staff_client.get("/admin/notifications/suppression/", {"q": "BLOCKED@example.com"})
    assert b"blocked@example.com" in found.content
    staff_client.post(f"/admin/notifications/suppression/{suppression.pk}/delete/", {"post": "yes"})
    assert not Suppression.objects.filter(pk=suppression.pk).exists()


@pytest.mark.parametrize(
    ("channel", "address"), [("email", "not an email"), ("email", "a@"), ("sms", "+1")]
)
def test_a_suppression_of_something_that_is_no_address_is_refused(staff_client, channel, address):
    response = staff_client.post(
        "/admin/notifications/suppression/add/",
        {"channel": channel, "address": address, "reason": "manual", "detail": ""},
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["address"]
    assert not Suppression.objects.exists()


def test_a_test_send_is_held_to_what_the_send_api_accepts(staff_client):
    response = staff_client.post(
        "/admin/notifications/delivery/send-test/",
        {"channel": "email", "to": "ops@example.com", "subject": "s", "body": "b" * 100_001},
        follow=True,
    )
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"]]
    assert any(m.startswith("Not sent: content.body:") for m in shown), shown
    assert not NotificationRequest.objects.exists()


@pytest.mark.parametrize(
    ("key", "to", "field", "expected"),
    [
        ("reminder-sms", "+33612345678", "text", "Dentist appointment"),
        ("reminder-push", "ada", "title", "Dentist appointment"),
        ("welcome-in-app", "ada", "title", "Acme"),
    ],
)
def test_send_a_test_of_each_channel(staff_client, make_user_token, key, to, field, expected):
    make_user_token("ada", email="ada@example.com")
    version = TemplateVersion.objects.filter(template__key=key, is_live=True).first()
    url = f"/admin/notifications/delivery/send-test/?template_version={version.pk}"
    assert expected in staff_client.get(url).content.decode()
    response = staff_client.post(url, {"template_version": str(version.pk), "to": to})
    assert response.status_code == 302, response.content.decode()[-2000:]
    request = NotificationRequest.objects.get(caller="admin:ops")
    assert expected in request.content[field], "the rendered text is what is sent"
    assert request.channels == [version.template.channel]
