"""The campaign pages' own views, as the console's script and buttons call them: the progress JSON
(every delivery status; staff with the view permission only), the segment size, and the buttons'
verbs (POST only, the change permission, the author refused as approver)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from campaigns.models import Campaign, Segment
from communication.models import User
from notifications.models import Delivery, Notification, NotificationRequest

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"


def _staff(username: str, *perms: str) -> Client:
    user = User.objects.create_user(username, f"{username}@example.com", PASSWORD, is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=perms))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def campaign(db):
    segment = Segment.objects.create(
        name="French", rules={"field": "locale", "op": "eq", "value": "fr"}
    )
    campaign = Campaign.objects.create(
        name="Spring",
        category_id="marketing",
        channels=["email"],
        segment=segment,
        status="pending_approval",
        created_by="staff:author",
    )
    campaign.steps.create(position=1, content={"subject": "Hi", "body": "Hello"})
    request = NotificationRequest.objects.create(
        caller="campaign", category_id="marketing", campaign_id=campaign.id
    )
    for status in ("delivered", "failed", "queued", "queued"):
        notification = Notification.objects.create(
            request=request, recipient={"email": "x@example.com"}, category_id="marketing"
        )
        Delivery.objects.create(notification=notification, channel="email", status=status)
    return campaign


def test_progress_json_for_staff_who_may_view(campaign):
    url = f"/admin/campaigns/campaign/{campaign.id}/progress.json"
    viewer = _staff("viewer", "view_campaign")
    body = viewer.get(url).json()
    assert body["status"] == "pending_approval"
    assert set(body["by_status"]) == set(Delivery.Status.values)
    assert body["total"] == 4 and body["by_status"]["queued"] == 2 and body["percent"] == 50.0
    assert _staff("nobody").get(url).status_code == 403
    assert Client().get(url).status_code == 302  # to the login page
    missing = viewer.get(
        "/admin/campaigns/campaign/0190a000-0000-7000-8000-000000000000/progress.json"
    )
    assert missing.status_code == 404

    count_url = f"/admin/campaigns/campaign/segment-count/{campaign.segment_id}.json"
    User.objects.create(username="fr-1", external_id="fr-1", locale="fr")
    assert _staff("seg-viewer", "view_segment").get(count_url).json() == {"count": 1}
    assert viewer.get(count_url).status_code == 403


def test_buttons_need_a_post_the_change_permission_and_another_approver(campaign):
    url = f"/admin/campaigns/campaign/{campaign.id}/transition/approve/"
    viewer = _staff("viewer", "view_campaign")
    assert viewer.post(url).status_code == 403
    author = _staff("author", "view_campaign", "change_campaign")
    assert author.get(url).status_code == 405
    page = author.post(url, follow=True)
    assert "approver_is_author" not in page.content.decode()  # said in words, not as a code
    assert "cannot approve" in page.content.decode()
    campaign.refresh_from_db()
    assert campaign.status == "pending_approval"
    assert (
        author.post(f"/admin/campaigns/campaign/{campaign.id}/transition/nope/").status_code == 403
    )

    reviewer = _staff("reviewer", "view_campaign", "change_campaign")
    reviewer.post(url)
    campaign.refresh_from_db()
    assert campaign.status == "scheduled" and campaign.approved_by == "staff:reviewer"
