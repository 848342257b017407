"""The API's body parsers: DRF's, refusing NUL characters anywhere in what they parsed.

Set in ``REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"]``, so every viewset parses through them. A
body holding a NUL is a 400 ``validation_error`` naming each field (``data.items[1]``), raised
when the view first reads ``request.data``, before any service sees it (see
``communication.api.input``).
"""

from __future__ import annotations

import io

from django.conf import settings
from rest_framework import exceptions, parsers

from communication.api.input import multi_nul_fields, nul_error, nul_fields


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read() if stream is not None else b""
        try:
            data = super().parse(io.BytesIO(raw), media_type, parser_context)
        except RecursionError:
            # Python's decoder recurses once per nesting level: ``[[[[…`` a few thousand deep
            # exhausts the stack, which is the client's fault (400), not ours (500).
            raise exceptions.ParseError("JSON parse error - nested too deeply.") from None
        # In JSON a NUL can only be written as the escape \u0000 (a raw control character is not
        # JSON): a UTF-8 body without one needs no walk, which a large send would pay for.
        encoding = (parser_context or {}).get("encoding") or settings.DEFAULT_CHARSET
        if encoding.lower().replace("-", "") == "utf8" and b"\\u0000" not in raw:
            return data
        fields = nul_fields(data)
        if fields:
            raise nul_error(fields)
        return data


class FormParser(parsers.FormParser):
    def parse(self, stream, media_type=None, parser_context=None):
        data = super().parse(stream, media_type, parser_context)
        fields = multi_nul_fields(data.lists())
        if fields:
            raise nul_error(fields)
        return data


class MultiPartParser(parsers.MultiPartParser):
    """Form fields and the names of uploaded files."""

    def parse(self, stream, media_type=None, parser_context=None):
        parsed = super().parse(stream, media_type, parser_context)
        fields = multi_nul_fields([*parsed.data.lists(), *parsed.files.lists()])
        if fields:
            raise nul_error(fields)
        return parsed
