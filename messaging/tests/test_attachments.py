"""Uploads: type from content, images re-encoded without EXIF, thumbnails, signed links."""

from __future__ import annotations

import io
import time
from urllib.parse import parse_qs, urlparse

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from messaging import attachments
from messaging.tests.conftest import create_conversation, post_message

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }
    # Django's setting_changed signal rebuilds the storages from these settings.


def jpeg_with_exif() -> bytes:
    image = Image.new("RGB", (800, 600), (200, 10, 10))
    exif = Image.Exif()
    exif[0x010F] = "SpyCam"  # Make
    exif[0x0131] = "secret-software"  # Software
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif.tobytes())
    return out.getvalue()


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (50, 40), (0, 0, 255, 128)).save(out, format="PNG")
    return out.getvalue()


def upload(client, data: bytes, name: str, content_type="image/png"):
    return client.post(
        "/api/v1/attachments",
        {"file": SimpleUploadedFile(name, data, content_type=content_type)},
        format="multipart",
    )


def download(client, url):
    response = client.get(url)
    body = b"".join(response.streaming_content) if response.status_code == 200 else b""
    return response, body


def test_image_is_reencoded_without_exif_and_thumbnailed(as_user, alice, bob):
    a, b = as_user(alice), as_user(bob)
    original = jpeg_with_exif()
    assert b"SpyCam" in original
    response = upload(a, original, "holiday.jpg", "image/jpeg")
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) >= {"id", "content_type", "size", "url", "thumbnail_url"}
    assert body["content_type"] == "image/jpeg"
    got, data = download(a, body["url"])
    assert got.status_code == 200 and got["Content-Type"] == "image/jpeg"
    assert b"SpyCam" not in data and b"secret-software" not in data
    assert not Image.open(io.BytesIO(data)).getexif()
    thumb, tdata = download(a, body["thumbnail_url"])
    assert thumb.status_code == 200
    assert max(Image.open(io.BytesIO(tdata)).size) <= 320
    # Before it is sent, only the uploader can fetch it.
    bob_url = attachments.signed_url(body["id"], bob.pk)
    assert download(b, bob_url)[0].status_code == 403
    # Sent in a conversation: its members get their own links.
    conv = create_conversation(a)
    message = post_message(a, conv["id"], "", attachments=[body["id"]])
    assert message["type"] == "attachment" and message["attachments"][0]["id"] == body["id"]
    listed = b.get(f"/api/v1/conversations/{conv['id']}/messages").json()["results"][-1]
    assert download(b, listed["attachments"][0]["url"])[0].status_code == 200
    # Not twice.
    again = a.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        {"content": "again", "attachments": [body["id"]]},
        format="json",
    )
    assert again.status_code == 400 and again.json()["code"] == "invalid_attachment"


def test_executable_named_png_is_refused(as_user, alice):
    a = as_user(alice)
    pe = b"MZ" + b"\x90\x00" * 30 + b"\x00" * 200 + b"This program cannot be run in DOS mode"
    response = upload(a, pe, "cute-cat.png")
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"
    elf = b"\x7fELF\x02\x01\x01" + b"\x00" * 300
    assert upload(a, elf, "cat.png").status_code == 415
    text = upload(a, b"just some text pretending", "cat.png")
    assert text.status_code == 415


def test_png_with_broken_body_is_refused(as_user, alice):
    broken = png()[:40] + b"garbage" * 10
    response = upload(as_user(alice), broken, "x.png")
    assert response.status_code == 400 and response.json()["code"] == "invalid_image"


def test_size_limit(as_user, alice, settings):
    settings.MESSAGING_ATTACHMENT_MAX_BYTES = 100
    response = upload(as_user(alice), png() + b"\x00" * 200, "x.png")
    assert response.status_code == 413


def test_expired_link_is_403_and_tampered_link_is_403(as_user, alice, bob, carol):
    a = as_user(alice)
    body = upload(a, png(), "a.png").json()
    expired = attachments.signed_url(body["id"], alice.pk, now=time.time() - 7200)
    response = a.get(expired)
    assert response.status_code == 403 and response.json()["code"] == "link_expired"
    query = parse_qs(urlparse(body["url"]).query)
    tampered = body["url"].replace(query["sig"][0], "0" * 40)
    assert a.get(tampered).json()["code"] == "link_invalid"
    # A link made for alice does not open for carol's id with alice's signature.
    forged = body["url"].replace(str(alice.pk), str(carol.pk))
    assert a.get(forged).status_code == 403


def test_member_who_left_loses_access(as_user, alice, bob, carol):
    a, b = as_user(alice), as_user(bob)
    body = upload(a, png(), "a.png").json()
    conv = create_conversation(a, "group", ["bob"])
    post_message(a, conv["id"], "see", attachments=[body["id"]])
    link = b.get(f"/api/v1/attachments/{body['id']}").json()["url"]
    assert download(b, link)[0].status_code == 200
    b.post(f"/api/v1/conversations/{conv['id']}/leave")
    assert b.get(link).status_code == 403
    assert as_user(carol).get(f"/api/v1/attachments/{body['id']}").status_code == 404
