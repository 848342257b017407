"""SMS providers against a local HTTP server: Twilio with the real ``twilio`` client, OVH with
``requests`` and our signature, recomputed here from what the server received.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time

import pytest
from werkzeug import Response

from notifications.providers.base import (
    AmbiguousProviderError,
    Message,
    PermanentProviderError,
    ProviderNotConfiguredError,
    RateLimitedError,
    TransientProviderError,
)
from notifications.providers.ovh_sms import OvhSmsProvider
from notifications.providers.twilio_sms import TwilioSmsProvider

ACCOUNT = "AC0123456789abcdef0123456789abcdef"
TWILIO_SEND = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"


def an_sms(**overrides) -> Message:
    values = {
        "channel": "sms",
        "to": "+33612345678",
        "text": "Billing is down since 10:02.",
        "delivery_id": "5b0c7d0e-8d4e-4f59-9a55-3d2b0f3c1a11",
        "category": "alerts",
    }
    values.update(overrides)
    return Message(**values)


def received(httpserver, path: str):
    return [request for request, _ in httpserver.log if request.path == path][-1]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def stall():
    """A handler that holds the request until the test is over: the answer never comes."""
    release = threading.Event()

    def handler(request):
        release.wait(10)
        return Response("{}", status=201)

    yield handler
    release.set()


# ---------------------------------------------------------------------------------------- Twilio


@pytest.fixture
def twilio(httpserver, settings):
    settings.PUBLIC_BASE_URL = "https://comm.example.com"
    return TwilioSmsProvider(
        "twilio",
        {
            "ACCOUNT_SID": ACCOUNT,
            "AUTH_TOKEN": "twilio-token",
            "FROM": "+15005550006",
            "API_URL": httpserver.url_for("/").rstrip("/"),
            "TIMEOUT": 0.5,
        },
    )


def twilio_error(httpserver, status: int, code: int, message: str, headers=None):
    httpserver.expect_request(TWILIO_SEND, method="POST").respond_with_json(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status=status,
        headers=headers,
    )


def test_twilio_sends_with_the_real_client_through_the_api_url(httpserver, twilio):
    httpserver.expect_request(TWILIO_SEND, method="POST").respond_with_json(
        {
            "sid": "SM0123456789abcdef0123456789abcdef",
            "status": "queued",
            "num_segments": "1",
            "account_sid": ACCOUNT,
            "to": "+33612345678",
        },
        status=201,
    )

    result = twilio.send(an_sms())

    assert result.provider_message_id == "SM0123456789abcdef0123456789abcdef"
    request = received(httpserver, TWILIO_SEND)
    assert request.authorization.username == ACCOUNT
    assert request.authorization.password == "twilio-token"
    assert request.form.to_dict() == {
        "To": "+33612345678",
        "From": "+15005550006",
        "Body": "Billing is down since 10:02.",
        "StatusCallback": "https://comm.example.com/webhooks/twilio/status",
    }


def test_twilio_messaging_service_and_alias_in_the_callback(httpserver, settings):
    settings.PUBLIC_BASE_URL = "https://comm.example.com/"
    provider = TwilioSmsProvider(
        "twilio-eu",
        {
            "ACCOUNT_SID": ACCOUNT,
            "AUTH_TOKEN": "t",
            "FROM": "MG0123",
            "API_URL": httpserver.url_for("/"),
        },
    )
    httpserver.expect_request(TWILIO_SEND).respond_with_json({"sid": "SM1"}, status=201)

    provider.send(an_sms())

    form = received(httpserver, TWILIO_SEND).form
    assert form["MessagingServiceSid"] == "MG0123"
    assert "From" not in form
    assert form["StatusCallback"] == (
        "https://comm.example.com/webhooks/twilio/status?provider=twilio-eu"
    )


def test_twilio_invalid_number_is_permanent(httpserver, twilio):
    twilio_error(httpserver, 400, 21211, "The 'To' number +3361 is not a valid phone number.")
    with pytest.raises(PermanentProviderError) as caught:
        twilio.send(an_sms())
    assert caught.value.code == "invalid_number"
    assert not caught.value.suppress


def test_twilio_opted_out_recipient_is_permanent_and_suppressed(httpserver, twilio):
    twilio_error(httpserver, 400, 21610, "Attempt to send to unsubscribed recipient")
    with pytest.raises(PermanentProviderError) as caught:
        twilio.send(an_sms())
    assert caught.value.suppress
    assert caught.value.code == "unsubscribe"


def test_twilio_rate_limit_honours_retry_after(httpserver, twilio):
    twilio_error(httpserver, 429, 20429, "Too Many Requests", headers={"Retry-After": "12"})
    with pytest.raises(RateLimitedError) as caught:
        twilio.send(an_sms())
    assert caught.value.retry_after == 12


def test_twilio_server_error_is_ambiguous(httpserver, twilio):
    # Twilio may have created the message before failing: no idempotency, so no blind resend.
    twilio_error(httpserver, 500, 20500, "Internal Server Error")
    with pytest.raises(AmbiguousProviderError) as caught:
        twilio.send(an_sms())
    assert caught.value.ambiguous


def test_twilio_timeout_after_sending_is_ambiguous(httpserver, twilio, stall):
    httpserver.expect_request(TWILIO_SEND).respond_with_handler(stall)
    with pytest.raises(AmbiguousProviderError) as caught:
        twilio.send(an_sms())
    assert caught.value.code == "timeout"


def test_twilio_unreachable_before_sending_is_transient(settings):
    provider = TwilioSmsProvider(
        "twilio",
        {
            "ACCOUNT_SID": ACCOUNT,
            "AUTH_TOKEN": "t",
            "FROM": "+15005550006",
            "API_URL": f"http://127.0.0.1:{closed_port()}",
        },
    )
    with pytest.raises(TransientProviderError) as caught:
        provider.send(an_sms())
    assert not caught.value.ambiguous
    assert caught.value.code == "network"


def test_twilio_bad_credentials_fail_over(httpserver, twilio):
    twilio_error(httpserver, 401, 20003, "Authenticate")
    with pytest.raises(TransientProviderError) as caught:
        twilio.send(an_sms())
    assert caught.value.code == "auth"
    assert not caught.value.ambiguous


def test_twilio_malformed_answers(httpserver, twilio):
    # A 201 we cannot read: the message probably exists.
    httpserver.expect_ordered_request(TWILIO_SEND).respond_with_data("<html>", status=201)
    # An error page that is not Twilio's JSON: classified by its status.
    httpserver.expect_ordered_request(TWILIO_SEND).respond_with_data("<html>", status=400)
    with pytest.raises(AmbiguousProviderError) as caught:
        twilio.send(an_sms())
    assert caught.value.code == "malformed"
    with pytest.raises(PermanentProviderError):
        twilio.send(an_sms())


def test_twilio_without_credentials_is_not_configured():
    with pytest.raises(ProviderNotConfiguredError):
        TwilioSmsProvider("twilio", {"ACCOUNT_SID": ACCOUNT, "AUTH_TOKEN": "", "FROM": "+1"})


# ------------------------------------------------------------------------------------------- OVH

OVH_SEND = "/1.0/sms/sms-ab12345-1/jobs"


@pytest.fixture
def ovh(httpserver, settings):
    settings.PUBLIC_BASE_URL = "https://comm.example.com"
    settings.OVH_WEBHOOK_TOKEN = "callback-secret"
    return OvhSmsProvider(
        "ovh",
        {
            "API_URL": httpserver.url_for("/1.0"),
            "APPLICATION_KEY": "app-key",
            "APPLICATION_SECRET": "app-secret",
            "CONSUMER_KEY": "consumer-key",
            "SMS_SERVICE": "sms-ab12345-1",
            "SENDER": "ACME",
            "TIMEOUT": 0.5,
        },
    )


def test_ovh_sends_a_signed_job(httpserver, ovh):
    httpserver.expect_request(OVH_SEND, method="POST").respond_with_json(
        {
            "ids": [246813579],
            "validReceivers": ["+33612345678"],
            "invalidReceivers": [],
            "totalCreditsRemoved": 1,
            "tag": "",
        }
    )
    before = int(time.time())

    result = ovh.send(an_sms())

    assert result.provider_message_id == "246813579"
    assert result.cost == 1
    request = received(httpserver, OVH_SEND)
    body = request.get_data(as_text=True)
    headers = request.headers
    assert headers["X-Ovh-Application"] == "app-key"
    assert headers["X-Ovh-Consumer"] == "consumer-key"
    timestamp = headers["X-Ovh-Timestamp"]
    assert before <= int(timestamp) <= time.time() + 1
    # OVH's scheme, recomputed independently from what arrived.
    url = httpserver.url_for(OVH_SEND)
    expected = (
        "$1$"
        + hashlib.sha1(
            f"app-secret+consumer-key+POST+{url}+{body}+{timestamp}".encode()
        ).hexdigest()
    )
    assert headers["X-Ovh-Signature"] == expected
    job = json.loads(body)
    assert job["receivers"] == ["+33612345678"]
    assert job["message"] == "Billing is down since 10:02."
    assert job["sender"] == "ACME"
    assert job["noStopClause"] is True
    assert job["callBack"] == ("https://comm.example.com/webhooks/ovh/status?token=callback-secret")


def test_ovh_marketing_keeps_the_stop_clause_and_no_token_means_no_callback(
    httpserver, ovh, settings
):
    settings.OVH_WEBHOOK_TOKEN = ""
    httpserver.expect_request(OVH_SEND).respond_with_json({"ids": [1], "invalidReceivers": []})
    ovh.send(an_sms(category="marketing"))
    job = json.loads(received(httpserver, OVH_SEND).get_data())
    assert job["noStopClause"] is False
    assert "callBack" not in job


def test_ovh_invalid_receiver_is_permanent(httpserver, ovh):
    httpserver.expect_request(OVH_SEND).respond_with_json(
        {
            "ids": [],
            "validReceivers": [],
            "invalidReceivers": ["+33612345678"],
            "totalCreditsRemoved": 0,
        }
    )
    with pytest.raises(PermanentProviderError) as caught:
        ovh.send(an_sms())
    assert caught.value.code == "invalid_number"


def test_ovh_refused_job_is_permanent(httpserver, ovh):
    httpserver.expect_request(OVH_SEND).respond_with_json(
        {"message": "Invalid message: empty", "httpCode": "400 Bad Request"}, status=400
    )
    with pytest.raises(PermanentProviderError) as caught:
        ovh.send(an_sms())
    assert "Invalid message" in str(caught.value)


def test_ovh_account_problems_are_transient(httpserver, ovh):
    httpserver.expect_ordered_request(OVH_SEND).respond_with_json(
        {"message": "Invalid signature"}, status=400 + 3
    )
    httpserver.expect_ordered_request(OVH_SEND).respond_with_json(
        {"message": "Not enough credits to send this SMS"}, status=400
    )
    with pytest.raises(TransientProviderError) as caught:
        ovh.send(an_sms())
    assert caught.value.code == "auth"
    with pytest.raises(TransientProviderError) as caught:
        ovh.send(an_sms())
    assert caught.value.code == "configuration"


def test_ovh_rate_limit_honours_retry_after(httpserver, ovh):
    httpserver.expect_request(OVH_SEND).respond_with_json(
        {"message": "Too many requests"}, status=429, headers={"Retry-After": "3"}
    )
    with pytest.raises(RateLimitedError) as caught:
        ovh.send(an_sms())
    assert caught.value.retry_after == 3


def test_ovh_server_error_and_timeout_are_ambiguous(httpserver, ovh, stall):
    httpserver.expect_ordered_request(OVH_SEND).respond_with_json(
        {"message": "Internal server error"}, status=502
    )
    httpserver.expect_ordered_request(OVH_SEND).respond_with_handler(stall)
    with pytest.raises(AmbiguousProviderError):
        ovh.send(an_sms())
    with pytest.raises(AmbiguousProviderError) as caught:
        ovh.send(an_sms())
    assert caught.value.code == "timeout"


def test_ovh_unreachable_is_transient():
    provider = OvhSmsProvider(
        "ovh",
        {
            "API_URL": f"http://127.0.0.1:{closed_port()}/1.0",
            "APPLICATION_KEY": "a",
            "APPLICATION_SECRET": "s",
            "CONSUMER_KEY": "c",
            "SMS_SERVICE": "sms-x",
        },
    )
    with pytest.raises(TransientProviderError) as caught:
        provider.send(an_sms())
    assert not caught.value.ambiguous


def test_ovh_malformed_answers_are_ambiguous(httpserver, ovh):
    httpserver.expect_ordered_request(OVH_SEND).respond_with_data("<html>ok</html>")
    httpserver.expect_ordered_request(OVH_SEND).respond_with_json({"validReceivers": []})
    with pytest.raises(AmbiguousProviderError):
        ovh.send(an_sms())
    with pytest.raises(AmbiguousProviderError):
        ovh.send(an_sms())


def test_twilio_signature_check_uses_the_public_url(twilio):
    params = {"MessageSid": "SM1", "MessageStatus": "delivered"}
    url = "https://comm.example.com/webhooks/twilio/status"
    payload = url + "".join(f"{k}{params[k]}" for k in sorted(params))
    signature = base64.b64encode(
        hmac.new(b"twilio-token", payload.encode(), hashlib.sha1).digest()
    ).decode()
    assert twilio.verify_callback(url, params, signature)
    assert not twilio.verify_callback(
        "http://internal:8000/webhooks/twilio/status", params, signature
    )
    assert not twilio.verify_callback(url, params, "")
