"""Attachment checks, image re-encoding and signed download links.

The type is read from the bytes (``filetype``'s magic numbers), never from the name or the
client's Content-Type, and must be on ``MESSAGING_ATTACHMENT_TYPES``. Images are decoded and
written again by Pillow: whatever rode along (EXIF and GPS, trailing payloads, polyglots) does not
survive, and the orientation EXIF carried is applied to the pixels first.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import time
from dataclasses import dataclass
from urllib.parse import urlencode

import filetype
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from PIL import Image, ImageOps, UnidentifiedImageError

from communication.exceptions import APIError, PayloadTooLargeError
from messaging import conf


class UnsupportedTypeError(APIError):
    status_code = 415
    default_code = "unsupported_media_type"
    default_detail = "This type of file is not accepted."


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
    max_pixels = conf.get("MESSAGING_ATTACHMENT_MAX_PIXELS")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            if probe.width * probe.height > max_pixels:
                raise PayloadTooLargeError("The image has too many pixels.")
            probe.verify()
        image: Image.Image = Image.open(io.BytesIO(data))
        animated = getattr(image, "is_animated", False) and mime in ("image/gif", "image/webp")
        fmt = PILLOW_FORMATS[mime]
        out = io.BytesIO()
        if animated:
            # Frames are re-encoded; Pillow writes no EXIF unless asked.
            image.save(out, format=fmt, save_all=True, optimize=False)
            first = image.convert("RGBA")
        else:
            image = ImageOps.exif_transpose(image)
            if fmt == "JPEG" and image.mode not in ("RGB", "L"):
                image = image.convert("RGB")
            kwargs = {"quality": 90} if fmt in ("JPEG", "WEBP") else {}
            image.save(out, format=fmt, **kwargs)
            first = image
        thumb = first.copy()
        size = conf.get("MESSAGING_THUMBNAIL_SIZE")
        thumb.thumbnail((size, size))
        if thumb.mode not in ("RGB", "RGBA"):
            thumb = thumb.convert("RGBA")
        thumb_out = io.BytesIO()
        thumb.save(thumb_out, format="WEBP", quality=80)
        return Processed(
            out.getvalue(),
            mime,
            EXTENSIONS[mime],
            thumbnail=thumb_out.getvalue(),
            width=first.width,
            height=first.height,
        )
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise APIError(
            "The image could not be decoded.",
            code="invalid_image",
            fields={"file": ["Not a readable image."]},
        ) from None


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
