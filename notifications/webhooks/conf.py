"""Webhook settings, read from the environment with django-environ.

Each value can be overridden by a Django setting of the same name (the tests do); otherwise the
environment decides:

- ``WEBHOOK_TIMESTAMP_TOLERANCE`` (seconds, default 300): how old (or how far in the future) a
  signed timestamp may be (SendGrid, Mailgun).
- ``WEBHOOK_TRUSTED_PROXY_COUNT`` (default 0): how many proxies in front of us append to
  ``X-Forwarded-For``; 0 means the peer address (``REMOTE_ADDR``) is the caller.
- ``TWILIO_WEBHOOK_ALLOWED_IPS``, ``OVH_WEBHOOK_ALLOWED_IPS``, ``SENDGRID_WEBHOOK_ALLOWED_IPS``,
  ``MAILGUN_WEBHOOK_ALLOWED_IPS``: optional comma-separated addresses or CIDR networks; empty
  means any address (the signature still has to be right).
- ``OVH_WEBHOOK_TOKEN``: the shared secret put in the OVH callback URL; without it the OVH
  webhook refuses everything and the OVH provider asks for no callback.
"""

from __future__ import annotations

import environ
from django.conf import settings

env = environ.Env()

DEFAULTS = {
    "WEBHOOK_TIMESTAMP_TOLERANCE": env.int("WEBHOOK_TIMESTAMP_TOLERANCE", default=300),
    "WEBHOOK_TRUSTED_PROXY_COUNT": env.int("WEBHOOK_TRUSTED_PROXY_COUNT", default=0),
    "TWILIO_WEBHOOK_ALLOWED_IPS": env.list("TWILIO_WEBHOOK_ALLOWED_IPS", default=[]),
    "OVH_WEBHOOK_ALLOWED_IPS": env.list("OVH_WEBHOOK_ALLOWED_IPS", default=[]),
    "SENDGRID_WEBHOOK_ALLOWED_IPS": env.list("SENDGRID_WEBHOOK_ALLOWED_IPS", default=[]),
    "MAILGUN_WEBHOOK_ALLOWED_IPS": env.list("MAILGUN_WEBHOOK_ALLOWED_IPS", default=[]),
    "OVH_WEBHOOK_TOKEN": env.str("OVH_WEBHOOK_TOKEN", default=""),
}


def get(name: str):
    """The setting ``name``: Django's settings first, then the environment (read at import)."""
    return getattr(settings, name, DEFAULTS[name])
