"""Ids that are not ids, or not ours, answer like ids that do not exist.

- a conversation id that is not a UUID is a 404 on every method (it was a 500 on ``POST``);
- a message id beyond the database's integers is a 404, not a 500;
- a reply's ``parent_id`` in a conversation the sender is not in answers exactly as one that
  does not exist, so the answer tells nothing about other conversations.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db

HUGE = "99999999999999999999"  # past a bigint
NOT_UUIDS = [
    "not-a-uuid",
    "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
    "------------------------------------",
    "0123456789abcdef0123456789abcdef0123",
    "01234567-89ab-cdef-0123-456789abcdef0",
    "0123456-789ab-cdef-0123-456789abcdef",
]


def _not_found(response):
    assert response.status_code == 404, response.content
    assert response.json()["code"] == "not_found", response.content


@pytest.mark.parametrize("bad", NOT_UUIDS)
@pytest.mark.parametrize("method", ["get", "post"])
def test_a_conversation_id_that_is_not_a_uuid_is_a_404(as_user, alice, bad, method):
    client = as_user(alice)
    _not_found(getattr(client, method)(f"/api/v1/conversations/{bad}/messages", {}, format="json"))
    _not_found(getattr(client, method)(f"/api/v1/conversations/{bad}", {}, format="json"))


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", f"/api/v1/messages/{HUGE}"),
        ("put", f"/api/v1/messages/{HUGE}"),
        ("delete", f"/api/v1/messages/{HUGE}"),
        ("get", "/api/v1/messages/9223372036854775808"),
        ("delete", f"/api/v1/devices/{HUGE}"),
        ("get", "/api/v1/messages/-1"),
        ("get", "/api/v1/messages/1e3"),
        ("get", "/api/v1/notifications/requests/not-a-uuid"),
        ("get", "/api/v1/templates/versions/zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"),
        ("get", "/api/v1/attachments/not-a-uuid"),
        ("get", "/api/v1/notifications/zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"),
    ],
)
def test_huge_and_malformed_ids_are_a_404(as_user, alice, method, path):
    _not_found(getattr(as_user(alice), method)(path, {"content": "x"}, format="json"))


@pytest.mark.parametrize("parent_id", [HUGE, "9223372036854775808"])
def test_a_parent_id_past_the_database_integers_is_an_unknown_parent(
    as_user, alice, conversation, parent_id
):
    response = as_user(alice).post(
        f"/api/v1/conversations/{conversation['id']}/messages",
        {"content": "reply", "parent_id": int(parent_id)},
        format="json",
    )
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_parent"


def test_a_parent_elsewhere_answers_as_a_parent_nowhere(as_user, alice, bob, carol, conversation):
    """Bob and carol talk without alice; alice replies in her own conversation to one of their
    messages, then to a message id that does not exist: the same answer."""
    bob_client = as_user(bob)
    theirs = bob_client.post(
        "/api/v1/conversations", {"type": "direct", "participants": ["carol"]}, format="json"
    ).json()["id"]
    secret = bob_client.post(
        f"/api/v1/conversations/{theirs}/messages", {"content": "secret"}, format="json"
    ).json()["id"]

    client = as_user(alice)
    url = f"/api/v1/conversations/{conversation['id']}/messages"
    elsewhere = client.post(url, {"content": "r", "parent_id": secret}, format="json")
    nowhere = client.post(url, {"content": "r", "parent_id": secret + 1000}, format="json")
    assert elsewhere.status_code == nowhere.status_code == 400, (elsewhere.content, nowhere.content)
    assert elsewhere.json() == nowhere.json()
    assert nowhere.json()["code"] == "invalid_parent"

    # Alice's own message in her conversation is a parent she may reply to.
    mine = client.post(
        url, {"content": "r", "parent_id": conversation["message_id"]}, format="json"
    )
    assert mine.status_code == 201, mine.content
