"""An image's canvas and frame count, read from its container without decoding a pixel.

Pillow's ``MAX_IMAGE_PIXELS`` looks at one frame, and opening some formats already costs memory
(libwebp's animation decoder allocates two canvases as it opens), so the pixel budget is checked
on what the file declares, before Pillow sees it. A GIF frame may reach past the logical screen
and Pillow then grows the canvas to hold it, so the canvas counted here is the largest extent
of any frame, not the screen the header states.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass


class HeaderError(ValueError):
    """The container is not one this module can measure (truncated or malformed)."""


@dataclass(frozen=True)
class Canvas:
    width: int
    height: int
    frames: int

    @property
    def pixels(self) -> int:
        """What decoding every frame costs: each one is decoded onto the whole canvas."""
        return self.width * self.height * self.frames


def read(data: bytes, mime: str) -> Canvas:
    """The canvas ``data`` declares; raises HeaderError when it cannot be read."""
    reader = _READERS.get(mime)
    if reader is None:
        raise HeaderError(f"no header reader for {mime}")
    try:
        canvas = reader(data)
    except (IndexError, struct.error):
        raise HeaderError("truncated header") from None
    if canvas.width <= 0 or canvas.height <= 0:
        raise HeaderError("empty canvas")
    return canvas


def _png(data: bytes) -> Canvas:
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise HeaderError("not a PNG")
    width, height = struct.unpack_from(">II", data, 16)
    frames = 1
    # acTL (the APNG frame count) must come before the first IDAT.
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"IDAT":
            break
        if kind == b"acTL":
            frames = max(1, struct.unpack_from(">I", data, pos + 8)[0])
            break
        pos += 12 + length
    return Canvas(width, height, frames)


# Start-of-frame markers carry the dimensions; C4 (DHT), C8 (JPG) and CC (DAC) do not.
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(data: bytes) -> Canvas:
    if data[:2] != b"\xff\xd8":
        raise HeaderError("not a JPEG")
    pos = 2
    while True:
        if data[pos] != 0xFF:
            raise HeaderError("marker expected")
        while data[pos] == 0xFF:  # fill bytes
            pos += 1
        marker = data[pos]
        pos += 1
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            continue
        if marker in (0xD9, 0xDA):
            raise HeaderError("no frame header before the scan")
        (length,) = struct.unpack_from(">H", data, pos)
        if marker in _SOF:
            height, width = struct.unpack_from(">HH", data, pos + 3)
            # A multi-picture (MPO) file holds more images, but only the first is decoded.
            return Canvas(width, height, 1)
        pos += length


def _gif(data: bytes) -> Canvas:
    if data[:6] not in (b"GIF87a", b"GIF89a"):
        raise HeaderError("not a GIF")
    width, height, packed = struct.unpack_from("<HHB", data, 6)
    pos = 13
    if packed & 0x80:
        pos += 3 << ((packed & 7) + 1)
    frames = 0
    size = len(data)
    while pos < size:
        block = data[pos]
        if block == 0x2C:  # image descriptor
            left, top, w, h, flags = struct.unpack_from("<HHHHB", data, pos + 1)
            width, height = max(width, left + w), max(height, top + h)
            frames += 1
            pos += 10
            if flags & 0x80:
                pos += 3 << ((flags & 7) + 1)
            pos += 1  # LZW minimum code size
        elif block == 0x21:  # extension: label, then data sub-blocks
            pos += 2
        else:  # trailer, or bytes past the end that decoders ignore as well
            break
        # Skip the data sub-blocks: a length byte, that many bytes, until a zero length.
        while pos < size and (length := data[pos]):
            pos += length + 1
        pos += 1
    return Canvas(width, height, max(frames, 1))


def _webp(data: bytes) -> Canvas:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise HeaderError("not a WebP")
    kind = data[12:16]
    body = 20
    if kind == b"VP8X":
        width = 1 + int.from_bytes(data[body + 4 : body + 7], "little")
        height = 1 + int.from_bytes(data[body + 7 : body + 10], "little")
        frames = 0
        pos = 12
        while pos + 8 <= len(data):
            chunk, length = struct.unpack_from("<4sI", data, pos)
            if chunk == b"ANMF":
                frames += 1
            pos += 8 + length + (length & 1)
        return Canvas(width, height, max(frames, 1))
    if kind == b"VP8 ":
        if data[body + 3 : body + 6] != b"\x9d\x01\x2a":
            raise HeaderError("not a VP8 key frame")
        width, height = struct.unpack_from("<HH", data, body + 6)
        return Canvas(width & 0x3FFF, height & 0x3FFF, 1)
    if kind == b"VP8L":
        if data[body] != 0x2F:
            raise HeaderError("not a VP8L stream")
        (bits,) = struct.unpack_from("<I", data, body + 1)
        return Canvas((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, 1)
    raise HeaderError("unknown WebP chunk")


_READERS = {
    "image/png": _png,
    "image/jpeg": _jpeg,
    "image/gif": _gif,
    "image/webp": _webp,
}
