"""The console's changes in the audit trail (one entry per add, change and delete, named for the
staff member, with field names and never the object's text), and logs that carry no personal
data: addresses, phone numbers and tokens are redacted from every line, and neither a
notification's address nor a chat message's text is ever logged."""

from __future__ import annotations

import io
import json
import logging

import pytest
from rest_framework.test import APIClient

from communication.auth import tokens
from communication.logging import JsonFormatter, RedactTokensFilter, RequestIdFilter
from communication.models import AuditEntry, Category, User
from notifications import services as notification_services

pytestmark = pytest.mark.django_db

EMAIL = "canary.person@example.org"
PHONE = "+33698765432"
TEXT = "the canary sings at midnight"


@pytest.fixture
def staff(db):
    return User.objects.create_user(
        username="ops-jane", password="x", is_staff=True, is_superuser=True
    )


def _form(category: Category, **changes) -> dict:
    data = {
        "key": category.key,
        "name": category.name,
        "description": category.description,
        "default_channels": json.dumps(category.default_channels),
        "position": str(category.position),
        "frequency_caps": json.dumps(category.frequency_caps),
        "digest_modes": json.dumps(category.digest_modes),
        "digest_time": category.digest_time.strftime("%H:%M") if category.digest_time else "",
        "digest_weekday": str(category.digest_weekday),
        "_save": "Save",
    }
    for flag in ("mandatory", "requires_consent", "tracking_allowed"):
        if getattr(category, flag):
            data[flag] = "on"
    data.update(changes)
    return data


def test_a_change_in_the_console_is_recorded_for_the_staff_member(client, staff):
    client.force_login(staff)
    category = Category.objects.create(key="canary", name=f"Mail for {EMAIL}")
    response = client.post(
        f"/admin/communication/category/{category.pk}/change/",
        _form(category, name="Renamed", description="Private note"),
    )
    assert response.status_code == 302, response.content.decode()[:2000]

    (entry,) = AuditEntry.objects.filter(action="admin.change")
    assert (entry.actor, entry.object_type, entry.object_id) == (
        "staff:ops-jane",
        "communication.category",
        str(category.pk),
    )
    assert {"description", "name"} <= {f.lower() for f in entry.changes["fields"]}
    assert entry.request_id and entry.ip
    # The LogEntry's text (the object's name, here holding an address) never reaches the trail.
    assert EMAIL not in json.dumps(entry.changes) and "Renamed" not in json.dumps(entry.changes)


def test_a_console_change_through_a_service_is_recorded_once_by_the_service(client, staff):
    from campaigns.models import Segment  # noqa: PLC0415

    client.force_login(staff)
    segment = Segment.objects.create(
        name="French", rules={"field": "locale", "op": "eq", "value": "fr"}
    )
    response = client.post(
        f"/admin/campaigns/segment/{segment.pk}/change/",
        {
            "name": "Francophones",
            "description": "",
            "rules": json.dumps({"field": "locale", "op": "eq", "value": "fr"}),
            "_save": "Save",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    (entry,) = AuditEntry.objects.filter(object_id=str(segment.pk))
    assert (entry.action, entry.actor) == ("segment.update", "staff:ops-jane")
    assert entry.changes == {"name": ["French", "Francophones"]}


def test_a_bulk_delete_in_the_console_records_each_object(client, staff):
    client.force_login(staff)
    doomed = [Category.objects.create(key=f"doomed-{i}", name=f"Doomed {i}") for i in range(2)]
    response = client.post(
        "/admin/communication/category/",
        {
            "action": "delete_selected",
            "_selected_action": [str(c.pk) for c in doomed],
            "post": "yes",
        },
    )
    assert response.status_code == 302
    assert not Category.objects.filter(key__startswith="doomed-").exists()
    deleted = AuditEntry.objects.filter(action="admin.delete").order_by("object_id")
    assert [(e.actor, e.object_type, e.object_id) for e in deleted] == [
        ("staff:ops-jane", "communication.category", str(c.pk)) for c in doomed
    ]


# ------------------------------------------------------------------------------------ logging


def _handler() -> tuple[logging.Handler, io.StringIO]:
    """The production handler's filters and formatter (settings.LOGGING), on a buffer."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RedactTokensFilter())
    handler.setFormatter(JsonFormatter())
    return handler, out


def test_a_line_with_an_address_a_phone_and_a_token_comes_out_redacted():
    handler, out = _handler()
    logger = logging.getLogger("communication.tests.redaction")
    logger.addHandler(handler)
    try:
        logger.warning(
            "mail to %s, sms to %s, Authorization: Bearer abc.def.ghi",
            EMAIL,
            PHONE,
            extra={"to": EMAIL.upper(), "url": "/x?to=canary.person%40example.org&token=s3cr3t"},
        )
    finally:
        logger.removeHandler(handler)
    line = json.loads(out.getvalue())
    text = out.getvalue()
    assert EMAIL not in text.lower() and PHONE not in text
    assert "s3cr3t" not in text and "abc.def.ghi" not in text
    assert "canary.person%40example.org" not in text
    assert line["message"] == (
        "mail to [redacted-email], sms to [redacted-phone], Authorization: Bearer [redacted]"
    )
    assert line["to"] == "[redacted-email]"
    # A time zone offset is not a phone number.
    assert "+00:00" in line["time"]


def test_sending_a_notification_and_a_chat_message_logs_neither_address_nor_text(
    make_service_token, django_capture_on_commit_callbacks
):
    handler, out = _handler()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        sender = APIClient()
        sender.credentials(HTTP_AUTHORIZATION=f"Bearer {make_service_token('billing')}")
        sent = sender.post(
            "/api/v1/notifications",
            {
                "recipients": [{"email": EMAIL}, {"phone": PHONE}],
                "category": "alerts",
                "channels": ["email", "sms"],
                "content": {"subject": TEXT, "text": TEXT, "body": TEXT},
            },
            format="json",
        )
        assert sent.status_code == 202, sent.content
        ids = [d["id"] for n in sent.json()["notifications"] for d in n["deliveries"]]
        # The email to the address and the SMS to the number (each recipient's other channel
        # has no address and is skipped).
        outcomes = [notification_services.delivery_attempt(i) for i in ids]
        assert outcomes.count("sent") == 2, outcomes

        ann = User.objects.create(username="ann", external_id="ann", email=EMAIL, phone=PHONE)
        User.objects.create(username="ben", external_id="ben", email="ben@example.org")
        chat = APIClient()
        chat.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens.issue_user_token(ann)}")
        with django_capture_on_commit_callbacks(execute=True):
            conversation = chat.post(
                "/api/v1/conversations", {"type": "direct", "participants": ["ben"]}, format="json"
            ).json()
            posted = chat.post(
                f"/api/v1/conversations/{conversation['id']}/messages",
                {"content": TEXT},
                format="json",
            )
        assert posted.status_code == 201, posted.content
        # A request that fails logs its path and status: still no address.
        chat.get(f"/api/v1/users/{EMAIL}")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    logged = out.getvalue()
    assert logged.strip(), "nothing was logged: the capture is not working"
    assert EMAIL not in logged and PHONE not in logged and TEXT not in logged
