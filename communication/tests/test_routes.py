"""The API's routes (``communication.api.routers``): strict UUID ids, words not taken for ids,
and an optional trailing slash on every route."""

from __future__ import annotations

import uuid

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

# 36 characters of the UUID alphabet, but not a UUID: the database would refuse it.
NOT_A_UUID = "-" * 36
ALSO_NOT_A_UUID = "0123456789abcdef0123456789abcdef-ab-"


@pytest.fixture
def staff_client(make_user_token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_user_token('ops', is_staff=True)}")
    return client


@pytest.mark.parametrize("bad", [NOT_A_UUID, ALSO_NOT_A_UUID])
@pytest.mark.parametrize(
    ("method", "path", "who"),
    [
        ("get", "/api/v1/notifications/{}", "user"),
        ("delete", "/api/v1/notifications/{}", "user"),
        ("post", "/api/v1/notifications/{}/read", "user"),
        ("put", "/api/v1/notifications/{}/unread", "user"),
        ("get", "/api/v1/notifications/requests/{}", "service"),
        ("patch", "/api/v1/notifications/requests/{}", "service"),
        ("get", "/api/v1/conversations/{}", "user"),
        ("post", "/api/v1/conversations/{}/messages", "user"),
        ("get", "/api/v1/conversations/{}/messages", "user"),
        ("post", "/api/v1/conversations/{}/read", "user"),
        ("get", "/api/v1/attachments/{}", "user"),
        ("get", "/api/v1/attachments/{}/download", "user"),
        ("get", "/api/v1/templates/versions/{}", "staff"),
        ("post", "/api/v1/templates/versions/{}/approve", "staff"),
    ],
)
def test_an_id_that_is_not_a_uuid_is_not_found(
    user_client, service_client, staff_client, method, path, who, bad
):
    client = {"user": user_client, "service": service_client, "staff": staff_client}[who]
    response = getattr(client, method)(path.format(bad), {"message_id": 1}, format="json")
    assert response.status_code == 404, response.content
    assert response.json()["code"] == "not_found"


def test_an_unknown_uuid_reaches_the_view(user_client):
    response = user_client.get(f"/api/v1/conversations/{uuid.uuid4()}")
    assert response.status_code == 404
    assert response.json()["detail"] != "Not found."  # the view's answer, not the router's


@pytest.mark.parametrize("slash", ["", "/"])
def test_inbox_words_are_not_taken_for_a_notification_id(user_client, service_client, slash):
    unread = user_client.get(f"/api/v1/notifications/unread{slash}")
    assert unread.status_code == 200 and unread.json() == {"count": 0, "results": []}
    history = user_client.get(f"/api/v1/notifications/history{slash}")
    assert history.status_code == 200 and history.json()["results"] == []
    read_all = user_client.post(f"/api/v1/notifications/read-all{slash}")
    assert read_all.status_code == 200 and read_all.json() == {"marked": 0}
    requests = service_client.get(f"/api/v1/notifications/requests{slash}")
    assert requests.status_code == 200 and requests.json()["results"] == []
    # A word on the id's route answers as that word's route, never as a notification id.
    assert user_client.delete(f"/api/v1/notifications/unread{slash}").status_code == 405
    assert user_client.delete(f"/api/v1/notifications/read-all{slash}").status_code == 405


@pytest.mark.parametrize(
    ("method", "path", "who", "status"),
    [
        ("get", "/api/v1/me", "user", 200),
        ("get", "/api/v1/notifications/categories", "user", 200),
        ("get", "/api/v1/notifications/preferences", "user", 200),
        ("put", "/api/v1/notifications/preferences", "user", 200),
        ("get", "/api/v1/notifications/consents", "user", 200),
        ("get", "/api/v1/devices", "user", 200),
        ("get", "/api/v1/conversations", "user", 200),
        ("get", "/api/v1/outbox", "staff", 200),
        ("get", "/api/v1/templates", "staff", 200),
        ("get", "/api/v1/templates/categories", "staff", 200),
        ("get", "/api/v1/templates/versions", "staff", 200),
        ("post", "/api/v1/notifications", "service", 400),
        ("post", "/api/v1/notifications/schedule", "service", 400),
        ("get", "/api/v1/notifications", "service", 405),
    ],
)
@pytest.mark.parametrize("slash", ["", "/"])
def test_the_trailing_slash_is_optional(
    user_client, service_client, staff_client, method, path, who, status, slash
):
    client = {"user": user_client, "service": service_client, "staff": staff_client}[who]
    response = getattr(client, method)(path + slash, {}, format="json")
    assert response.status_code == status, response.content


def test_a_double_slash_is_not_a_route(user_client):
    assert user_client.get("/api/v1/notifications/unread//").status_code == 404
