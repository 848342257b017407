"""Structured logging: one JSON object per line, a request id on every line, no token, email
address or phone number ever (a line names people by their ids; message text, notification
bodies and rendered content are never logged, so there is nothing of theirs to redact).

The request id lives in a context variable, so it follows a request through sync and async code
(asgiref copies the context into the threads it runs sync views on).
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

# A bearer token, a JWT anywhere, a token/secret/password query or form parameter, a phone
# number.
_REDACTIONS = [
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9\-_.~+/]+=*"), r"\1[redacted]"),
    (re.compile(r"eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*"), "[redacted-jwt]"),
    (
        re.compile(
            r"(?i)\b((?:access_|id_|refresh_)?token|secret|password|api_key|auth)=([^&\s\"']+)"
        ),
        r"\1=[redacted]",
    ),
    # A phone number as E.164 writes it (+ and 7 to 15 digits, also percent-encoded); a
    # timestamp's "+00:00" is too short to match.
    (re.compile(r"(?<![\w+])(?:\+|%2[Bb])[1-9]\d{6,14}(?!\d)"), "[redacted-phone]"),
]


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


# An email address's domain, from its "@" (also percent-encoded, as in a query string); the
# local part is found by walking back from there. A single pattern for the whole address would
# backtrack over every run of word characters, which takes minutes on a long token.
_EMAIL_DOMAIN = re.compile(r"(?:@|%40)[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
_LOCAL_PART = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")


def _redact_emails(text: str) -> str:
    if "@" not in text and "%40" not in text:
        return text
    out: list[str] = []
    done = 0
    for match in _EMAIL_DOMAIN.finditer(text):
        start = match.start()
        while start > done and text[start - 1] in _LOCAL_PART:
            start -= 1
        if start == match.start():
            continue  # no local part: a decorator, a handle, not an address
        out += [text[done:start], "[redacted-email]"]
        done = match.end()
    out.append(text[done:])
    return "".join(out)


def redact(text: str) -> str:
    text = _redact_emails(text)
    for pattern, repl in _REDACTIONS:
        text = pattern.sub(repl, text)
    return text


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class RedactTokensFilter(logging.Filter):
    """Renders the message once, redacted (tokens, email addresses, phone numbers), so no
    formatter can put one back; the ``extra`` values a line carries are redacted too."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not lose the line
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, redact(value))
        return True


_SKIP = {"color_message", "request_id"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", request_id_var.get()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in entry and key not in _SKIP and key[0] != "_":
                # An object (Django's ``request``) is written as its text, redacted like the rest.
                entry[key] = (
                    value
                    if isinstance(value, (str, int, float, bool, type(None)))
                    else redact(str(value))
                )
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str)
