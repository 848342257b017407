"""Image uploads are bounded: a pixel budget counting frames, checked before decoding; a cap on
the images a process decodes at once; no metadata segment survives the re-encode."""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from PIL import Image, PngImagePlugin
from rest_framework.test import APIClient

from communication.auth import tokens
from communication.exceptions import APIError
from messaging import attachments, image_header

ROOT = Path(__file__).resolve().parents[2]
MARK = b"LEAKED-METADATA-7f3a"


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }


def upload(client, data: bytes, name: str):
    return client.post(
        "/api/v1/attachments",
        {"file": SimpleUploadedFile(name, data, content_type="application/octet-stream")},
        format="multipart",
    )


def stored(client, body: dict) -> bytes:
    response = client.get(body["url"])
    assert response.status_code == 200
    return b"".join(response.streaming_content)


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def frame_bomb(width: int, height: int, frames: int) -> bytes:
    """A GIF whose one uniform frame (a few KB once compressed) is repeated ``frames`` times.

    Pillow would write a repeated frame once, so the frame's blocks are copied by hand."""
    one = encode(Image.new("P", (width, height), 0), "GIF")
    packed = one[10]
    head = 13 + (3 << ((packed & 7) + 1) if packed & 0x80 else 0)
    return one[:head] + one[head:-1] * frames + b";"


def huge_png(width: int, height: int) -> bytes:
    """A real grayscale PNG of ``width`` x ``height`` black pixels, compressed row by row."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload)
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    packer = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def animated(fmt: str, size: tuple[int, int], frames: int, **params) -> bytes:
    images = [Image.new("RGB", size, (40 * i % 256, 0, 0)) for i in range(frames)]
    return encode(images[0], fmt, save_all=True, append_images=images[1:], **params)


# ------------------------------------------------------------------------------ pixel budget


@pytest.mark.django_db
def test_frame_bomb_gif_is_refused_before_decoding(as_user, alice):
    # One frame is within the budget; the thirty frames Pillow would decode are not.
    bomb = frame_bomb(6000, 6000, 30)
    assert len(bomb) < 1024 * 1024
    assert 6000 * 6000 < attachments.conf.get("MESSAGING_ATTACHMENT_MAX_PIXELS")
    response = upload(as_user(alice), bomb, "party.gif")
    assert response.status_code == 413, response.content
    body = response.json()
    assert body["code"] == "payload_too_large"
    assert "30 frames" in body["detail"] and body["fields"] == {
        "file": ["The image has too many pixels."]
    }


def test_frame_bomb_is_refused_in_bounded_time_and_memory(tmp_path):
    """In a process of its own, so that its peak resident memory is the refusal's alone."""
    bomb = tmp_path / "bomb.gif"
    bomb.write_bytes(frame_bomb(6000, 6000, 30))
    script = """
import json, resource, sys, time
import django
django.setup()
from communication.exceptions import PayloadTooLargeError
from messaging import attachments
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.monotonic()
try:
    attachments.process(data)
    status = 200
except PayloadTooLargeError as exc:
    status = exc.status_code
print(json.dumps({
    "status": status,
    "seconds": time.monotonic() - start,
    "grown_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before,
}))
"""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "communication.settings",
        "PYTHONPATH": str(ROOT),
        # Settings are read, no server is reached.
        "DATABASE_URL": "postgres://x@127.0.0.1:1/x",
        "REDIS_URL": "redis://127.0.0.1:1/0",
    }
    env.pop("MESSAGING_ATTACHMENT_MAX_PIXELS", None)
    done = subprocess.run(
        [sys.executable, "-c", script, str(bomb)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == 413
    # A single decoded 6000x6000 frame alone is 36 MB; reading the headers needs next to nothing.
    assert result["grown_kb"] < 16 * 1024, result
    assert result["seconds"] < 5, result


@pytest.mark.django_db
def test_large_pixel_png_is_refused(as_user, alice):
    png = huge_png(7000, 7000)  # 49 million pixels in about 50 KB
    assert len(png) < 100 * 1024
    response = upload(as_user(alice), png, "wall.png")
    assert response.status_code == 413, response.content
    assert response.json()["code"] == "payload_too_large"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("gif", lambda: animated("GIF", (100, 100), 4, duration=50, loop=0)),
        ("webp", lambda: animated("WEBP", (100, 100), 4, duration=50, loop=0)),
        ("png", lambda: encode(Image.new("RGBA", (200, 200)), "PNG")),
        ("jpg", lambda: encode(Image.new("RGB", (200, 200)), "JPEG")),
    ],
)
def test_budget_counts_frames_in_every_format(as_user, alice, settings, name, make):
    data = make()
    client = as_user(alice)
    # 100 x 100 x 4 frames, like 200 x 200 x 1, is 40,000 pixels: at the budget it passes, one below
    # the budget it is refused, whatever the size of one frame.
    settings.MESSAGING_ATTACHMENT_MAX_PIXELS = 40_000
    assert upload(client, data, f"a.{name}").status_code == 201
    settings.MESSAGING_ATTACHMENT_MAX_PIXELS = 39_999
    response = upload(client, data, f"a.{name}")
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"


def test_gif_frame_outside_the_screen_counts_with_its_full_extent():
    bomb = bytearray(frame_bomb(3000, 2000, 2))
    bomb[6:10] = struct.pack("<HH", 1, 1)  # the logical screen claims one pixel
    canvas = image_header.read(bytes(bomb), "image/gif")
    assert (canvas.width, canvas.height, canvas.frames) == (3000, 2000, 2)
    with Image.open(io.BytesIO(bytes(bomb))) as opened:
        assert opened.size == (3000, 2000)  # what Pillow would decode onto


@pytest.mark.parametrize(
    ("mime", "make"),
    [
        ("image/jpeg", lambda: encode(Image.new("RGB", (321, 123)), "JPEG", progressive=True)),
        (
            "image/jpeg",
            lambda: encode(Image.new("L", (77, 55)), "JPEG", exif=Image.Exif().tobytes()),
        ),
        ("image/png", lambda: encode(Image.new("RGBA", (300, 20)), "PNG")),
        ("image/png", lambda: encode(Image.new("P", (31, 17)), "PNG", interlace=1)),
        ("image/png", lambda: animated("PNG", (40, 30), 3, duration=10)),
        ("image/gif", lambda: encode(Image.new("P", (64, 48), 3), "GIF")),
        ("image/gif", lambda: animated("GIF", (64, 48), 5, duration=10, comment=b"x" * 600)),
        ("image/webp", lambda: encode(Image.new("RGB", (333, 111)), "WEBP")),
        ("image/webp", lambda: encode(Image.new("RGBA", (99, 101)), "WEBP", lossless=True)),
        ("image/webp", lambda: animated("WEBP", (50, 60), 3, duration=10)),
    ],
)
def test_header_reader_agrees_with_pillow(mime, make):
    data = make()
    canvas = image_header.read(data, mime)
    with Image.open(io.BytesIO(data)) as opened:
        assert (canvas.width, canvas.height) == opened.size
        assert canvas.frames == getattr(opened, "n_frames", 1)


@pytest.mark.django_db
def test_unreadable_header_is_400_not_500(as_user, alice):
    truncated = encode(Image.new("RGB", (10, 10)), "JPEG")[:30]
    response = upload(as_user(alice), truncated, "x.jpg")
    assert response.status_code == 400 and response.json()["code"] == "invalid_image"


# ------------------------------------------------------------------------------ concurrency


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_parallel_uploads_wait_for_a_worker_and_the_overflow_is_503(alice, settings):
    settings.MESSAGING_IMAGE_WORKERS = 2
    settings.MESSAGING_IMAGE_QUEUE = 3
    token = tokens.issue_user_token(alice)
    png = encode(Image.new("RGB", (300, 200), (0, 90, 0)), "PNG")

    def one_upload():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        try:
            return upload(client, png, "a.png").status_code
        finally:
            connection.close()

    def wait_until(predicate, what):
        deadline = time.monotonic() + 20
        while not predicate():
            assert time.monotonic() < deadline, what
            time.sleep(0.01)

    gate = attachments.gate
    with ThreadPoolExecutor(3) as pool, contextlib.ExitStack() as held:
        # Two images are being decoded (held here): the process has no worker free.
        first, second = contextlib.ExitStack(), contextlib.ExitStack()
        first.enter_context(gate.slot())
        second.enter_context(gate.slot())
        held.callback(first.close)
        held.callback(second.close)
        futures = [pool.submit(one_upload) for _ in range(3)]
        wait_until(lambda: gate.waiting == 3, "three uploads queue behind the two busy workers")
        assert gate.active == 2 and not any(f.done() for f in futures)
        # The queue is full: the next upload is answered at once, and not with a 500.
        overflow = APIClient()
        overflow.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        busy = upload(overflow, png, "b.png")
        assert busy.status_code == 503 and busy.json()["code"] == "busy"
        assert busy["Retry-After"] == "1"
        # One worker frees up: the queued uploads go through it one at a time.
        first.close()
        observed = []
        while not all(f.done() for f in futures):
            observed.append(gate.active)
            time.sleep(0.001)
        assert max(observed, default=0) <= 2
        assert [f.result() for f in futures] == [201, 201, 201]
        assert gate.waiting == 0
    assert gate.active == 0


def test_gate_releases_its_slot_when_decoding_fails(settings):
    settings.MESSAGING_IMAGE_WORKERS = 1
    broken = encode(Image.new("RGB", (20, 20)), "PNG")[:60] + b"junk" * 10
    for _ in range(3):
        with pytest.raises(APIError):
            attachments.process(broken)
    assert attachments.gate.active == 0
    done = threading.Event()

    def decode():
        attachments.process(encode(Image.new("RGB", (20, 20)), "PNG"))
        done.set()

    worker = threading.Thread(target=decode)
    worker.start()
    worker.join(10)
    assert done.is_set()


# ------------------------------------------------------------------------------ metadata


def jpeg_segments(data: bytes) -> list[int]:
    """The markers before the scan data."""
    markers, pos = [], 2
    while data[pos] == 0xFF:
        marker = data[pos + 1]
        markers.append(marker)
        if marker == 0xDA:
            break
        pos += 2 + struct.unpack_from(">H", data, pos + 2)[0]
    return markers


def gif_extensions(data: bytes) -> list[bytes]:
    """Each extension block's label, with an application extension's identifier."""
    packed = data[10]
    pos = 13 + (3 << ((packed & 7) + 1) if packed & 0x80 else 0)
    found = []
    while data[pos] != 0x3B:
        if data[pos] == 0x21:
            label = data[pos + 1]
            found.append(bytes([label]) + (data[pos + 3 : pos + 14] if label == 0xFF else b""))
            pos += 2
        else:
            flags = data[pos + 9]
            pos += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0) + 1
        while data[pos]:
            pos += data[pos] + 1
        pos += 1
    return found


def png_chunks(data: bytes) -> list[bytes]:
    kinds, pos = [], 8
    while pos < len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        kinds.append(kind)
        pos += 12 + length
    return kinds


def riff_chunks(data: bytes) -> list[bytes]:
    kinds, pos = [], 12
    while pos < len(data):
        kind, length = struct.unpack_from("<4sI", data, pos)
        kinds.append(kind)
        pos += 8 + length + (length & 1)
    return kinds


def exif_with_mark() -> bytes:
    exif = Image.Exif()
    exif[0x010E] = MARK.decode()  # ImageDescription
    return exif.tobytes()


@pytest.mark.django_db
def test_jpeg_keeps_no_comment_exif_xmp_or_icc(as_user, alice):
    original = encode(
        Image.new("RGB", (120, 80), (10, 20, 30)),
        "JPEG",
        comment=MARK,
        exif=exif_with_mark(),
        xmp=MARK,
        icc_profile=b"\x00" * 128 + MARK,
    )
    assert 0xFE in jpeg_segments(original) and original.count(MARK) == 4
    client = as_user(alice)
    data = stored(client, upload(client, original, "a.jpg").json())
    assert MARK not in data
    # Only the JFIF header and what decoding needs: no COM (FE), APP1 (EXIF/XMP), APP2 (ICC).
    assert set(jpeg_segments(data)) <= {0xE0, 0xDB, 0xC0, 0xC4, 0xDD, 0xDA}


@pytest.mark.django_db
@pytest.mark.parametrize("frames", [1, 3])
def test_gif_keeps_no_comment_block(as_user, alice, frames):
    if frames == 1:
        original = encode(Image.new("P", (60, 40), 2), "GIF", comment=MARK)
    else:
        original = animated("GIF", (60, 40), frames, duration=80, loop=0, comment=MARK)
    assert b"\xfe" in [label[:1] for label in gif_extensions(original)]
    client = as_user(alice)
    data = stored(client, upload(client, original, "a.gif").json())
    assert MARK not in data
    # Graphic control (F9) and the NETSCAPE loop are rendering; no comment (FE), no other app.
    assert set(gif_extensions(data)) <= {b"\xf9", b"\xffNETSCAPE2.0"}
    with Image.open(io.BytesIO(data)) as image:
        assert getattr(image, "n_frames", 1) == frames


@pytest.mark.django_db
def test_png_keeps_no_text_exif_or_icc_chunks(as_user, alice):
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", MARK.decode())
    info.add_text("Author", MARK.decode(), zip=True)
    info.add_itxt("XML:com.adobe.xmp", MARK.decode())
    original = encode(
        Image.new("RGBA", (50, 50), (1, 2, 3, 100)),
        "PNG",
        pnginfo=info,
        exif=exif_with_mark(),
        icc_profile=b"\x00" * 128 + MARK,
    )
    assert {b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"iCCP"} <= set(png_chunks(original))
    client = as_user(alice)
    data = stored(client, upload(client, original, "a.png").json())
    assert MARK not in data
    assert set(png_chunks(data)) <= {b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"}


@pytest.mark.django_db
@pytest.mark.parametrize("frames", [1, 3])
def test_webp_keeps_no_exif_xmp_or_icc(as_user, alice, frames):
    params = {"exif": exif_with_mark(), "xmp": MARK, "icc_profile": b"\x00" * 128 + MARK}
    if frames == 1:
        original = encode(Image.new("RGB", (64, 64), (9, 9, 9)), "WEBP", **params)
    else:
        original = animated("WEBP", (64, 64), frames, duration=50, **params)
    assert {b"EXIF", b"XMP ", b"ICCP"} <= set(riff_chunks(original))
    client = as_user(alice)
    data = stored(client, upload(client, original, "a.webp").json())
    assert MARK not in data
    assert not {b"EXIF", b"XMP ", b"ICCP"} & set(riff_chunks(data))
