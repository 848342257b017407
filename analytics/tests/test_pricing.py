"""Per-message prices from PROVIDER_PRICES, and a malformed setting stopping the start."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from analytics import pricing

PRICES = {
    "twilio": {"sms": {"+33": 0.07, "+336": "0.075", "+1": 0.0079, "*": 0.05}, "push": 0},
    "sendgrid": {"email": 0.0004},
    "ovh": {"sms": {"+33": 0.06}},
}


@pytest.fixture(autouse=True)
def prices(settings):
    settings.PROVIDER_PRICES = PRICES


def test_a_channel_priced_per_message():
    assert pricing.price("sendgrid", "email", address="a@example.com") == Decimal("0.0004")
    assert pricing.price("twilio", "push") == Decimal("0")


def test_sms_by_the_longest_destination_prefix_times_segments():
    assert pricing.price("twilio", "sms", address="+33612345678") == Decimal("0.075")
    assert pricing.price("twilio", "sms", address="+33142000000") == Decimal("0.07")
    assert pricing.price("twilio", "sms", address="+14155550100", segments=3) == Decimal("0.0237")
    # No prefix matches: the "*" price.
    assert pricing.price("twilio", "sms", address="+4915112345678", segments=2) == Decimal("0.10")


def test_no_price_is_unknown_not_free():
    assert pricing.price("ovh", "sms", address="+4915112345678") is None, "no prefix, no '*'"
    assert pricing.price("sendgrid", "sms", address="+33612345678") is None
    assert pricing.price("mailgun", "email") is None


def test_prices_keep_their_decimals():
    # Through str: Decimal(0.07) would be 0.07000000000000000666…
    assert pricing.price("twilio", "sms", address="+33142000000") == Decimal("0.07")
    assert str(pricing.price("twilio", "sms", address="+33142000000", segments=3)) == "0.21"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([1, 2], "must be a JSON object"),
        ({"twilio": 0.07}, "PROVIDER_PRICES['twilio'] must be an object"),
        ({"sendgrid": {"email": "cheap"}}, "PROVIDER_PRICES['sendgrid']['email']: 'cheap'"),
        ({"sendgrid": {"email": -1}}, "a number ≥ 0"),
        ({"sendgrid": {"email": True}}, "is not a price"),
        ({"sendgrid": {"email": {"*": 0.1}}}, "only SMS is priced by destination"),
        ({"twilio": {"sms": {"33": 0.07}}}, "'33' is not a destination prefix"),
        ({"twilio": {"sms": {}}}, "an empty object prices nothing"),
        ({"twilio": {"sms": {"*": "NaN"}}}, "is not a price"),
    ],
)
def test_a_malformed_price_list_is_refused_naming_the_entry(value, message):
    with pytest.raises(ImproperlyConfigured, match=message.replace("[", r"\[").replace("]", r"\]")):
        pricing.validate(value)


def test_the_service_does_not_start_with_a_malformed_price_list():
    root = Path(__file__).resolve().parents[2]

    def check(prices: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "manage.py", "check"],
            cwd=root,
            env={**os.environ, "PROVIDER_PRICES": prices},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    # The two starts run side by side (a process each, independent of one another).
    bad = check('{"twilio": {"sms": {"France": 0.07}}}')
    good = check('{"twilio": {"sms": {"+33": 0.07}}}')
    _out, bad_err = bad.communicate(timeout=120)
    _out, good_err = good.communicate(timeout=120)
    assert bad.returncode != 0
    assert "PROVIDER_PRICES['twilio']['sms']: 'France' is not a destination prefix" in bad_err
    assert good.returncode == 0, good_err
