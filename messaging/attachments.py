"""Attachment checks, image re-encoding and signed download links.

The type is read from the bytes (``filetype``'s magic numbers), never from the name or the
client's Content-Type, and must be on ``MESSAGING_ATTACHMENT_TYPES``. Images are decoded and
written again by Pillow: whatever rode along (EXIF and GPS, XMP, ICC profiles, JPEG COM and GIF
comment blocks, PNG text chunks, trailing payloads, polyglots) does not survive, and the
orientation EXIF carried is applied to the pixels first.

A small file can declare a huge image (a uniform frame compresses a thousandfold, and a GIF
repeats it per frame), so before Pillow opens it the canvas and frame count its header declares
(``image_header``) must fit ``MESSAGING_ATTACHMENT_MAX_PIXELS``, and each web process decodes at
most ``MESSAGING_IMAGE_WORKERS`` images at once (``gate``).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlencode

import filetype
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from PIL import Image, ImageOps, UnidentifiedImageError

from communication.exceptions import APIError, PayloadTooLargeError, ServiceUnavailableError
from messaging import conf, image_header


class UnsupportedTypeError(APIError):
    status_code = 415
    default_code = "unsupported_media_type"
    default_detail = "This type of file is not accepted."


class ImageBusyError(ServiceUnavailableError):
    default_code = "busy"
    default_detail = "Too many images are being processed; try again shortly."
    wait = 1  # DRF answers it as the Retry-After header


class ImageGate:
    """Bounds the images this process decodes at once: ``MESSAGING_IMAGE_WORKERS`` run, at most
    ``MESSAGING_IMAGE_QUEUE`` more wait their turn, and any beyond are refused with 503.

    Each image decode holds an HTTP thread and memory in proportion to its pixels; the waiting
    ones hold a thread too, so the queue bound is what leaves the other threads of the process
    free to answer the rest of the API.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.active = 0
        self.waiting = 0

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        with self._cond:
            workers = max(1, conf.get("MESSAGING_IMAGE_WORKERS"))
            if self.active >= workers:
                if self.waiting >= conf.get("MESSAGING_IMAGE_QUEUE"):
                    raise ImageBusyError()
                self.waiting += 1
                try:
                    self._cond.wait_for(lambda: self.active < workers)
                finally:
                    self.waiting -= 1
            self.active += 1
        try:
            yield
        finally:
            with self._cond:
                self.active -= 1
                self._cond.notify()


gate = ImageGate()

# What an image carries besides pixels that changes how it is shown; everything else in Pillow's
# ``info`` (comments, EXIF, XMP, ICC, text chunks) is left out of the re-encoded file.
RENDERING_INFO = ("transparency", "background", "duration", "loop", "disposal")

EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/gif": "gif",
    "image/webp": "webp",
    "application/pdf": "pdf",
    "audio/mpeg": "mp3",
    "audio/ogg": "ogg",
    "video/mp4": "mp4",
    "video/webm": "webm",
}
PILLOW_FORMATS = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/gif": "GIF",
    "image/webp": "WEBP",
}


@dataclass
class Processed:
    content: bytes
    content_type: str
    extension: str
    thumbnail: bytes | None = None
    width: int | None = None
    height: int | None = None


def storage():
    return storages[conf.get("MESSAGING_ATTACHMENT_STORAGE")]


def detect(head: bytes) -> str | None:
    kind = filetype.guess(head)
    return kind.mime if kind else None


def process(data: bytes) -> Processed:
    """Checks ``data`` and returns what to store; raises 413 / 415 / 400."""
    if len(data) > conf.get("MESSAGING_ATTACHMENT_MAX_BYTES"):
        raise PayloadTooLargeError(
            f"Attachments are limited to {conf.get('MESSAGING_ATTACHMENT_MAX_BYTES')} bytes."
        )
    if not data:
        raise APIError("The file is empty.", fields={"file": ["Empty file."]})
    mime = detect(data[:8192])
    if mime is None or mime not in conf.get("MESSAGING_ATTACHMENT_TYPES"):
        raise UnsupportedTypeError(
            f"Files of type {mime or 'unknown'} are not accepted.",
            fields={"file": [f"Detected type {mime or 'unknown'} is not allowed."]},
        )
    if mime in PILLOW_FORMATS:
        return _process_image(data, mime)
    return Processed(data, mime, EXTENSIONS.get(mime, "bin"))


def _process_image(data: bytes, mime: str) -> Processed:
    try:
        canvas = image_header.read(data, mime)
    except image_header.HeaderError:
        raise _invalid_image() from None
    max_pixels = conf.get("MESSAGING_ATTACHMENT_MAX_PIXELS")
    if canvas.pixels > max_pixels:
        frames = f" in {canvas.frames} frames" if canvas.frames > 1 else ""
        raise PayloadTooLargeError(
            f"The image is {canvas.width}x{canvas.height}{frames}; images are limited to "
            f"{max_pixels} pixels, counting every frame.",
            fields={"file": ["The image has too many pixels."]},
        )
    with gate.slot():
        return _reencode(data, mime)


def _reencode(data: bytes, mime: str) -> Processed:
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()
        image: Image.Image = Image.open(io.BytesIO(data))
        animated = getattr(image, "is_animated", False) and mime in ("image/gif", "image/webp")
        fmt = PILLOW_FORMATS[mime]
        out = io.BytesIO()
        if animated:
            # Each frame's info is read again as the writer seeks to it, so the comment is
            # emptied through the save arguments; WebP writes EXIF/XMP/ICC only when asked.
            image.save(out, format=fmt, save_all=True, optimize=False, comment=b"")
            image.seek(0)
            first = image.convert("RGBA")
        else:
            try:
                image = ImageOps.exif_transpose(image)
            except SyntaxError:
                pass  # EXIF Pillow cannot parse has no orientation to apply; it is dropped anyway
            if fmt == "JPEG" and image.mode not in ("RGB", "L"):
                image = image.convert("RGB")
            image.info = {k: v for k, v in image.info.items() if k in RENDERING_INFO}
            kwargs = {"quality": 90} if fmt in ("JPEG", "WEBP") else {}
            image.save(out, format=fmt, **kwargs)
            first = image
        width, height = first.width, first.height
        # In place: a copy of the full-size frame would double the memory this upload holds.
        size = conf.get("MESSAGING_THUMBNAIL_SIZE")
        first.thumbnail((size, size))
        if first.mode not in ("RGB", "RGBA"):
            first = first.convert("RGBA")
        thumb_out = io.BytesIO()
        first.save(thumb_out, format="WEBP", quality=80)
        return Processed(
            out.getvalue(),
            mime,
            EXTENSIONS[mime],
            thumbnail=thumb_out.getvalue(),
            width=width,
            height=height,
        )
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise _invalid_image() from None


def _invalid_image() -> APIError:
    return APIError(
        "The image could not be decoded.",
        code="invalid_image",
        fields={"file": ["Not a readable image."]},
    )


def save(attachment_id, processed: Processed) -> tuple[str, str]:
    """Writes the file (and thumbnail) through the storage; returns their storage names."""
    base = f"attachments/{attachment_id.hex[:2]}/{attachment_id.hex}"
    store = storage()
    name = store.save(f"{base}/file.{processed.extension}", ContentFile(processed.content))
    thumb = ""
    if processed.thumbnail is not None:
        thumb = store.save(f"{base}/thumb.webp", ContentFile(processed.thumbnail))
    return name, thumb


# ------------------------------------------------------------------------------ signed links


def _signature(attachment_id, user_pk, expires: int, variant: str) -> str:
    key = hashlib.sha256(f"messaging.attachment:{settings.SECRET_KEY}".encode()).digest()
    msg = f"{attachment_id}|{user_pk}|{expires}|{variant}".encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()[:40]


def signed_url(attachment_id, user_pk, *, variant: str = "file", now: float | None = None) -> str:
    """A download link for ``user_pk``, valid ``MESSAGING_ATTACHMENT_LINK_SECONDS``.

    The link names the user it was made for: the download checks that they are still a member
    of the conversation, so a forwarded link is no use to anyone who is not.
    """
    expires = int((now or time.time()) + conf.get("MESSAGING_ATTACHMENT_LINK_SECONDS"))
    query = {
        "u": str(user_pk),
        "exp": expires,
        "sig": _signature(attachment_id, user_pk, expires, variant),
    }
    if variant != "file":
        query["v"] = variant
    return f"/api/v1/attachments/{attachment_id}/download?{urlencode(query)}"


class LinkError(Exception):
    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


def verify(attachment_id, *, user_pk: str, expires: str, signature: str, variant: str) -> None:
    """Raises LinkError(link_invalid | link_expired)."""
    try:
        exp = int(expires)
    except (TypeError, ValueError):
        raise LinkError("link_invalid", "The link is not valid.") from None
    good = _signature(attachment_id, user_pk, exp, variant)
    if not hmac.compare_digest(good, signature or ""):
        raise LinkError("link_invalid", "The link is not valid.")
    if exp < time.time():
        raise LinkError("link_expired", "The link has expired.")
