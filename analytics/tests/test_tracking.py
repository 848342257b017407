"""The open pixel and the click redirect: signed tokens that say one delivery (and one URL),
machine opens flagged, and nothing recorded for a token we did not make or that expired."""

from __future__ import annotations

import base64
import json
import time
import uuid
import zlib

import pytest
from django.core import signing
from django.test import Client
from django.urls import reverse

from analytics import events, tracking
from analytics.models import Event
from analytics.views import PIXEL

pytestmark = pytest.mark.django_db

BASE = "https://comm.example.com"
SAFARI = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15"
)
GMAIL_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)


@pytest.fixture(autouse=True)
def public_base(settings):
    settings.PUBLIC_BASE_URL = BASE


@pytest.fixture
def sent():
    """A delivery's ``sent`` event, as the worker writes it: the dimensions an open copies."""
    return events.record(
        "sent",
        channel="email",
        provider="sendgrid",
        category="marketing",
        caller="crm",
        notification_id=uuid.uuid4(),
        delivery_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        template="spring-sale",
        template_version=uuid.uuid4(),
        variant="b",
        campaign_id=uuid.uuid4(),
        latency_ms=12.0,
    )


def path_of(url: str) -> str:
    assert url.startswith(BASE)
    return url[len(BASE) :]


def engagement() -> list[Event]:
    return list(Event.objects.filter(type__in=["opened", "clicked"]).order_by("id"))


def dimensions(event: Event) -> dict:
    return {name: getattr(event, name) for name in events.DELIVERY_DIMENSIONS}


def old_token(kind: str, payload, *, days: int) -> str:
    """A token made ``days`` ago, as the app made it then (same salt, same signer)."""

    class Then(signing.TimestampSigner):
        def timestamp(self):
            return signing.b62_encode(int(time.time()) - days * 86400)

    return Then(salt=f"analytics.tracking.{kind}").sign_object(payload, compress=True)


# ------------------------------------------------------------------------------------- opens


def test_an_open_records_the_delivery_dimensions_and_answers_a_gif(client: Client, sent):
    response = client.get(
        path_of(tracking.Links(sent.delivery_id).open_url()), HTTP_USER_AGENT=SAFARI
    )

    assert response.status_code == 200
    assert response["Content-Type"] == "image/gif"
    assert response.content == PIXEL and PIXEL.startswith(b"GIF89a")
    assert "no-store" in response["Cache-Control"]
    assert "Set-Cookie" not in response, "no session for a pixel"
    (opened,) = engagement()
    assert opened.type == "opened" and opened.machine is False
    assert dimensions(opened) == dimensions(sent)
    assert opened.data == {"user_agent": SAFARI}


def test_every_open_is_recorded_unique_ones_are_the_rollups_business(client, sent):
    path = path_of(tracking.Links(sent.delivery_id).open_url())
    for _ in range(3):
        assert client.get(path, HTTP_USER_AGENT=SAFARI).status_code == 200
    assert len(engagement()) == 3


def test_a_bad_open_token_gets_the_same_gif_and_records_nothing(client, sent):
    good = tracking.Links(sent.delivery_id).open_token()
    value, stamp, signature = good.rsplit(":", 2)
    bad_tokens = [
        "nonsense",
        f"{value}:{stamp}:{signature[:-2]}xx",  # signature tampered
        tracking.Links(sent.delivery_id).click_token("https://example.com/"),  # a click's token
        old_token("open", sent.delivery_id.hex, days=91),  # expired (90 days by default)
    ]
    for token in bad_tokens:
        response = client.get(f"/t/o/{token}.gif", HTTP_USER_AGENT=SAFARI)
        assert response.status_code == 200, token
        assert response["Content-Type"] == "image/gif"
        assert response.content == PIXEL
        assert "no-store" in response["Cache-Control"]
    assert engagement() == []


def test_a_token_within_its_max_age_still_counts(client, sent, settings):
    token = old_token("open", sent.delivery_id.hex, days=10)
    client.get(f"/t/o/{token}.gif", HTTP_USER_AGENT=SAFARI)
    assert len(engagement()) == 1
    settings.TRACKING_TOKEN_MAX_AGE_DAYS = 7
    client.get(f"/t/o/{token}.gif", HTTP_USER_AGENT=SAFARI)
    assert len(engagement()) == 1, "older than TRACKING_TOKEN_MAX_AGE_DAYS: not recorded"


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"HTTP_USER_AGENT": "Mozilla/5.0"}, "apple_mpp"),  # Apple's proxy's bare agent
        ({"HTTP_USER_AGENT": SAFARI, "REMOTE_ADDR": "17.58.63.1"}, "apple_mpp"),  # Apple's net
        ({"HTTP_USER_AGENT": "Barracuda Sentinel (EE)"}, "scanner:barracuda"),
        ({"HTTP_USER_AGENT": "Mozilla/5.0 (compatible; Mimecast LinkCheck)"}, "scanner:mimecast"),
        ({"HTTP_USER_AGENT": "Mozilla/5.0 (Proofpoint URL Defense)"}, "scanner:proofpoint"),
        (
            {"HTTP_USER_AGENT": "Mozilla/5.0 (Windows NT 10.0) BingPreview/1.0b"},
            "scanner:microsoft",
        ),
        ({"HTTP_USER_AGENT": "curl/8.5.0"}, "bot"),
        ({"HTTP_USER_AGENT": "python-requests/2.32.3"}, "bot"),
        ({"HTTP_USER_AGENT": "Googlebot-Image/1.0"}, "bot"),
        ({}, "no_user_agent"),
    ],
)
def test_machine_opens_are_recorded_and_flagged(client, sent, headers, reason):
    response = client.get(path_of(tracking.Links(sent.delivery_id).open_url()), **headers)
    assert response.status_code == 200
    (opened,) = engagement()
    assert opened.machine is True
    assert opened.data["reason"] == reason
    assert dimensions(opened) == dimensions(sent)


def test_a_head_request_is_a_machine(client, sent):
    response = client.head(
        path_of(tracking.Links(sent.delivery_id).open_url()), HTTP_USER_AGENT=SAFARI
    )
    assert response.status_code == 200
    (opened,) = engagement()
    assert (opened.machine, opened.data["reason"]) == (True, "head_request")


def test_gmail_image_proxy_is_a_person(client, sent):
    """Gmail fetches the images when its user opens the message (then serves them from its
    cache): a person's open, not a prefetch."""
    client.get(
        path_of(tracking.Links(sent.delivery_id).open_url()),
        HTTP_USER_AGENT=GMAIL_PROXY,
        REMOTE_ADDR="66.249.93.84",
    )
    (opened,) = engagement()
    assert opened.machine is False


def test_apple_detection_reads_the_client_address_behind_the_trusted_proxy(client, sent, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    path = path_of(tracking.Links(sent.delivery_id).open_url())
    client.get(
        path, HTTP_USER_AGENT=SAFARI, HTTP_X_FORWARDED_FOR="17.1.2.3", REMOTE_ADDR="10.0.0.1"
    )
    # A client cannot pass for Apple by writing its own X-Forwarded-For entry first.
    client.get(
        path,
        HTTP_USER_AGENT=SAFARI,
        HTTP_X_FORWARDED_FOR="17.1.2.3, 203.0.113.9",
        REMOTE_ADDR="10.0.0.1",
    )
    assert [e.machine for e in engagement()] == [True, False]


def test_an_open_before_the_sent_event_is_kept_under_its_delivery(client):
    delivery_id = uuid.uuid4()
    client.get(path_of(tracking.Links(delivery_id).open_url()), HTTP_USER_AGENT=SAFARI)
    (opened,) = engagement()
    assert opened.delivery_id == delivery_id and opened.template == ""


def test_the_sent_event_is_looked_up_around_the_tokens_time(
    client, sent, django_assert_num_queries
):
    """One indexed read of the sent event, one insert, and the one statement that stops the
    notification's escalation (inside the transaction's savepoint and release, here within the
    test's own transaction): the same whatever the table holds."""
    path = path_of(tracking.Links(sent.delivery_id).open_url())
    with django_assert_num_queries(5) as captured:
        client.get(path, HTTP_USER_AGENT=SAFARI)
    lookup = captured.captured_queries[0]["sql"]
    assert '"occurred_at" >=' in lookup and '"occurred_at" <' in lookup


# ------------------------------------------------------------------------------------ clicks


def test_a_click_redirects_to_exactly_the_signed_url(client, sent):
    url = "https://shop.example.com/spring?utm_source=email&x=%2F#top"
    response = client.get(
        path_of(tracking.Links(sent.delivery_id).click_url(url)), HTTP_USER_AGENT=SAFARI
    )

    assert response.status_code == 302
    assert response["Location"] == url
    assert "no-store" in response["Cache-Control"]
    assert response["Referrer-Policy"] == "no-referrer"
    (clicked,) = engagement()
    assert clicked.type == "clicked" and clicked.machine is False
    assert clicked.data["url"] == url
    assert dimensions(clicked) == dimensions(sent)


def test_a_scanner_following_a_link_is_redirected_and_flagged(client, sent):
    url = "https://shop.example.com/"
    response = client.get(
        path_of(tracking.Links(sent.delivery_id).click_url(url)),
        HTTP_USER_AGENT="Mozilla/5.0 (Windows NT 10.0; Win64; x64) BingPreview/1.0b",
    )
    assert response.status_code == 302 and response["Location"] == url
    (clicked,) = engagement()
    assert (clicked.machine, clicked.data["reason"]) == (True, "scanner:microsoft")


def _decode(value: str):
    compressed = value.startswith(".")
    raw = base64.urlsafe_b64decode(value.lstrip(".") + "=" * (-len(value.lstrip(".")) % 4))
    return json.loads(zlib.decompress(raw) if compressed else raw), compressed


def _encode(payload, compressed: bool) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    if compressed:
        raw = zlib.compress(raw)
    return ("." if compressed else "") + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_a_click_token_cannot_be_made_to_lead_elsewhere(client, sent):
    token = tracking.Links(sent.delivery_id).click_token("https://shop.example.com/offer")
    value, stamp, signature = token.rsplit(":", 2)
    payload, compressed = _decode(value)
    assert payload[1] == "https://shop.example.com/offer"
    other = tracking.Links(sent.delivery_id).click_token("https://evil.example.net/")

    forged = [
        # The URL part rewritten, the signature kept.
        f"{_encode([payload[0], 'https://evil.example.net/'], compressed)}:{stamp}:{signature}",
        # Another delivery, same URL.
        f"{_encode([uuid.uuid4().hex, payload[1]], compressed)}:{stamp}:{signature}",
        # One token's URL with another's signature.
        f"{value}:{stamp}:{other.rsplit(':', 1)[1]}",
        # The signature altered.
        f"{value}:{stamp}:{signature[:-1]}{'A' if signature[-1] != 'A' else 'B'}",
        # The timestamp moved (the signature covers it).
        f"{value}:{signing.b62_encode(int(time.time()) + 5)}:{signature}",
        # An open token is not a click token.
        tracking.Links(sent.delivery_id).open_token(),
        old_token("click", [sent.delivery_id.hex, "https://shop.example.com/offer"], days=91),
        "",
    ]
    for bad in forged:
        response = client.get(f"/t/c/{bad}", HTTP_USER_AGENT=SAFARI)
        assert response.status_code == 404, bad
        assert "Location" not in response
    assert engagement() == []
    # The real one still works.
    assert client.get(f"/t/c/{token}", HTTP_USER_AGENT=SAFARI)["Location"] == (
        "https://shop.example.com/offer"
    )


def test_a_signed_url_that_is_not_http_could_never_be_made(sent):
    for url in [
        "javascript:alert(1)",
        "data:text/html,hi",
        "mailto:a@example.com",
        "//evil.example.net/",
        "https:///path-only",
        "https://example.com/a b",
        "https://example.com/\r\nSet-Cookie: x=1",
        "ftp://example.com/",
        "https://example.com/" + "a" * 3000,
    ]:
        with pytest.raises(ValueError):
            tracking.Links(sent.delivery_id).click_url(url)
    # Were one forged anyway (a leaked secret), the view would still refuse it.
    sneaky = signing.dumps(
        [sent.delivery_id.hex, "javascript:alert(1)"],
        salt="analytics.tracking.click",
        compress=True,
    )
    assert tracking.read_token(sneaky, tracking.CLICK) is None


def test_a_non_ascii_url_is_sent_as_its_uri(client, sent):
    url = "https://exemple.fr/été?q=ça"
    response = client.get(path_of(tracking.Links(sent.delivery_id).click_url(url)))
    assert response.status_code == 302
    assert response["Location"] == "https://exemple.fr/%C3%A9t%C3%A9?q=%C3%A7a"
    assert engagement()[0].data["url"] == url


# ---------------------------------------------------------------------------- hostile input


@pytest.mark.parametrize(
    "token",
    [
        "A" * 200_000,
        "." + "A" * 5000 + ":1abc:" + "B" * 43,
        "%00",
        "abc%00def:1abc:sig",
        "%C3%A9t%C3%A9:%F0%9F%98%80:%E2%80%AE",
        "%FF%FE",
        "a:b:c:d:e",
        ":::",
    ],
)
def test_hostile_tokens_never_cause_a_500_nor_an_event(client, token):
    pixel = client.get(f"/t/o/{token}.gif?n=%00", HTTP_USER_AGENT="x\x00y")
    click = client.get(f"/t/c/{token}", HTTP_USER_AGENT="x\x00y")
    # The pixel's answer never depends on its input, a NUL included; elsewhere a NUL in the
    # path is refused before any view (400), as everywhere in the service.
    assert pixel.status_code == 200 and pixel.content == PIXEL
    assert click.status_code in (400, 404)
    assert engagement() == []


def test_a_nul_in_the_user_agent_is_stored_without_it(client, sent):
    client.get(
        path_of(tracking.Links(sent.delivery_id).open_url()), HTTP_USER_AGENT="Mozilla\x00 Evil"
    )
    (opened,) = engagement()
    assert opened.data["user_agent"] == "Mozilla Evil"


def test_other_methods_are_refused(client, sent):
    path = path_of(tracking.Links(sent.delivery_id).click_url("https://example.com/"))
    assert client.post(path).status_code == 405
    assert client.put(path_of(tracking.Links(sent.delivery_id).open_url())).status_code == 405
    assert engagement() == []


def test_the_routes_are_named(sent):
    token = tracking.Links(sent.delivery_id).open_token()
    assert reverse("track-open", kwargs={"token": token}) == f"/t/o/{token}.gif"
    assert reverse("track-click", kwargs={"token": token}) == f"/t/c/{token}"
