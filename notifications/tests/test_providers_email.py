"""Email providers against stand-ins on the network: SendGrid and Mailgun played by a local HTTP
server with the real anymail backends talking to it, SMTP by a real local SMTP server (aiosmtpd).
Each provider: a success checked on what the server received, and each error class.
"""

from __future__ import annotations

import email
import json
import socket
import threading
import time
from email import policy

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from werkzeug import Response

from notifications.providers import registry
from notifications.providers.base import (
    AmbiguousProviderError,
    Message,
    PermanentProviderError,
    ProviderNotConfiguredError,
    RateLimitedError,
    TransientProviderError,
)
from notifications.providers.mailgun import MailgunEmailProvider
from notifications.providers.sendgrid import SendGridEmailProvider
from notifications.providers.smtp import SmtpEmailProvider, parse_smtp_url

# anymail 15 warns on every SendGrid backend it builds (AnymailNotSupportedWarning, not a
# UserWarning, so pytest.ini's filter misses it).
pytestmark = pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning")

UNSUBSCRIBE = {
    "List-Unsubscribe": "<https://comm.example.com/u/tok123>",
    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
}


def a_message(**overrides) -> Message:
    values = {
        "channel": "email",
        "to": "ops@example.com",
        "subject": "Disk almost full",
        "text": "The disk is 91% full.",
        "html": "<p>The disk is <b>91%</b> full.</p>",
        "headers": dict(UNSUBSCRIBE),
        "from_email": "Alerts <alerts@mg.example.com>",
        "delivery_id": "5b0c7d0e-8d4e-4f59-9a55-3d2b0f3c1a11",
        "category": "alerts",
        "tags": ["alerts"],
    }
    values.update(overrides)
    return Message(**values)


def received(httpserver, path: str):
    """The last request the local server received on ``path``."""
    return [request for request, _ in httpserver.log if request.path == path][-1]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def stall(httpserver):
    """A handler that holds the request until the test is over (a provider that never answers)."""
    release = threading.Event()

    def handler(request):
        release.wait(10)
        return Response("late", status=200)

    yield handler
    release.set()


# -------------------------------------------------------------------------------------- SendGrid


@pytest.fixture
def sendgrid(httpserver):
    return SendGridEmailProvider(
        "sendgrid",
        {"API_KEY": "SG.test-key", "API_URL": httpserver.url_for("/v3/"), "TIMEOUT": 0.5},
    )


def test_sendgrid_sends_through_anymail_and_returns_the_id_its_webhooks_report(
    httpserver, sendgrid
):
    httpserver.expect_request("/v3/mail/send", method="POST").respond_with_data("", status=202)

    result = sendgrid.send(a_message())

    request = received(httpserver, "/v3/mail/send")
    assert request.headers["Authorization"] == "Bearer SG.test-key"
    body = json.loads(request.get_data())
    personalization = body["personalizations"][0]
    assert personalization["to"] == [{"email": "ops@example.com"}]
    # The id anymail generated is the one SendGrid echoes in every event as anymail_id.
    assert personalization["custom_args"]["anymail_id"] == result.provider_message_id
    assert body["custom_args"] == {"delivery_id": "5b0c7d0e-8d4e-4f59-9a55-3d2b0f3c1a11"}
    assert body["headers"]["List-Unsubscribe"] == "<https://comm.example.com/u/tok123>"
    assert body["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert body["categories"] == ["alerts"]
    assert body["from"] == {"email": "alerts@mg.example.com", "name": "Alerts"}
    assert body["subject"] == "Disk almost full"
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert body["content"][1]["value"] == "<p>The disk is <b>91%</b> full.</p>"
    assert result.status == "sent"


def test_sendgrid_is_built_from_settings(settings, httpserver):
    settings.NOTIFICATION_PROVIDERS = {
        "sendgrid": {
            "BACKEND": "notifications.providers.sendgrid.SendGridEmailProvider",
            "OPTIONS": {"API_KEY": "SG.k", "API_URL": httpserver.url_for("/v3")},
        },
        "mailgun": {
            "BACKEND": "notifications.providers.mailgun.MailgunEmailProvider",
            "OPTIONS": {"API_KEY": ""},
        },
    }
    settings.EMAIL_PROVIDERS = ["sendgrid", "mailgun"]
    httpserver.expect_request("/v3/mail/send", method="POST").respond_with_data("", status=202)

    chain = registry.chain("email")

    # Mailgun has no key: it is left out, not silently broken.
    assert [p.alias for p in chain] == ["sendgrid"]
    assert chain[0].send(a_message()).provider_message_id


def test_sendgrid_refusal_is_permanent(httpserver, sendgrid):
    httpserver.expect_request("/v3/mail/send").respond_with_json(
        {"errors": [{"message": "Does not contain a valid address.", "field": "to"}]},
        status=400,
    )
    with pytest.raises(PermanentProviderError) as caught:
        sendgrid.send(a_message())
    assert caught.value.status_code == 400
    assert "valid address" in str(caught.value)


def test_sendgrid_server_error_is_transient(httpserver, sendgrid):
    httpserver.expect_request("/v3/mail/send").respond_with_data("oops", status=503)
    with pytest.raises(TransientProviderError) as caught:
        sendgrid.send(a_message())
    assert not caught.value.permanent and not caught.value.ambiguous
    assert caught.value.status_code == 503


def test_sendgrid_rate_limit_honours_retry_after(httpserver, sendgrid):
    httpserver.expect_request("/v3/mail/send").respond_with_json(
        {"errors": [{"message": "too many requests"}]}, status=429, headers={"Retry-After": "7"}
    )
    with pytest.raises(RateLimitedError) as caught:
        sendgrid.send(a_message())
    assert caught.value.retry_after == 7


def test_sendgrid_rate_limit_falls_back_to_its_reset_header(httpserver, sendgrid):
    reset = int(time.time()) + 30
    httpserver.expect_request("/v3/mail/send").respond_with_json(
        {"errors": [{"message": "too many requests"}]},
        status=429,
        headers={"X-RateLimit-Reset": str(reset)},
    )
    with pytest.raises(RateLimitedError) as caught:
        sendgrid.send(a_message())
    assert 25 <= caught.value.retry_after <= 30


def test_sendgrid_bad_key_fails_over_rather_than_failing_the_message(httpserver, sendgrid):
    httpserver.expect_request("/v3/mail/send").respond_with_json(
        {"errors": [{"message": "The provided authorization grant is invalid"}]}, status=401
    )
    with pytest.raises(TransientProviderError) as caught:
        sendgrid.send(a_message())
    assert caught.value.code == "auth"


def test_sendgrid_malformed_answers(httpserver, sendgrid):
    # A proxy's HTML page instead of SendGrid's JSON: classified by its status all the same.
    httpserver.expect_ordered_request("/v3/mail/send").respond_with_data(
        "<html>Bad Gateway</html>", status=502, content_type="text/html"
    )
    httpserver.expect_ordered_request("/v3/mail/send").respond_with_data(
        "<html>nope</html>", status=400, content_type="text/html"
    )
    # SendGrid's 202 has no body and its id is ours: garbage in a 202 is still a success.
    httpserver.expect_ordered_request("/v3/mail/send").respond_with_data("{not json", status=202)
    with pytest.raises(TransientProviderError):
        sendgrid.send(a_message())
    with pytest.raises(PermanentProviderError):
        sendgrid.send(a_message())
    assert sendgrid.send(a_message()).provider_message_id


def test_sendgrid_unreachable_or_silent_is_transient(httpserver, stall):
    refused = SendGridEmailProvider(
        "sendgrid", {"API_KEY": "k", "API_URL": f"http://127.0.0.1:{closed_port()}/v3/"}
    )
    with pytest.raises(TransientProviderError) as caught:
        refused.send(a_message())
    assert caught.value.code == "network"

    httpserver.expect_request("/v3/mail/send").respond_with_handler(stall)
    silent = SendGridEmailProvider(
        "sendgrid", {"API_KEY": "k", "API_URL": httpserver.url_for("/v3/"), "TIMEOUT": 0.3}
    )
    with pytest.raises(TransientProviderError) as caught:
        silent.send(a_message())
    # Email is safe to send again: a timeout is transient, not ambiguous.
    assert not caught.value.ambiguous


# --------------------------------------------------------------------------------------- Mailgun


@pytest.fixture
def mailgun(httpserver):
    return MailgunEmailProvider(
        "mailgun",
        {
            "API_KEY": "key-test",
            "SENDER_DOMAIN": "mg.example.com",
            "API_URL": httpserver.url_for("/v3"),
            "TIMEOUT": 0.5,
        },
    )


MAILGUN_SEND = "/v3/mg.example.com/messages"


def test_mailgun_sends_through_anymail_and_returns_mailguns_id(httpserver, mailgun):
    httpserver.expect_request(MAILGUN_SEND, method="POST").respond_with_json(
        {"id": "<20260101.1.abc@mg.example.com>", "message": "Queued. Thank you."}
    )

    result = mailgun.send(a_message())

    assert result.provider_message_id == "<20260101.1.abc@mg.example.com>"
    request = received(httpserver, MAILGUN_SEND)
    assert request.authorization.username == "api"
    assert request.authorization.password == "key-test"
    form = request.form
    assert form["to"] == "ops@example.com"
    assert form["from"] == "Alerts <alerts@mg.example.com>"
    assert form["subject"] == "Disk almost full"
    assert form["text"] == "The disk is 91% full."
    assert form["html"] == "<p>The disk is <b>91%</b> full.</p>"
    assert form["h:List-Unsubscribe"] == "<https://comm.example.com/u/tok123>"
    assert form["h:List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert form["v:delivery_id"] == "5b0c7d0e-8d4e-4f59-9a55-3d2b0f3c1a11"
    assert form.getlist("o:tag") == ["alerts"]


def test_mailgun_refusal_is_permanent(httpserver, mailgun):
    httpserver.expect_request(MAILGUN_SEND).respond_with_json(
        {"message": "'to' parameter is not a valid address. please check documentation"},
        status=400,
    )
    with pytest.raises(PermanentProviderError) as caught:
        mailgun.send(a_message())
    assert caught.value.status_code == 400


def test_mailgun_server_error_is_transient(httpserver, mailgun):
    httpserver.expect_request(MAILGUN_SEND).respond_with_data("Internal error", status=500)
    with pytest.raises(TransientProviderError) as caught:
        mailgun.send(a_message())
    assert not caught.value.permanent and not caught.value.ambiguous


def test_mailgun_rate_limit_honours_retry_after(httpserver, mailgun):
    httpserver.expect_request(MAILGUN_SEND).respond_with_json(
        {"message": "Too many requests"},
        status=429,
        headers={"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"},
    )
    with pytest.raises(RateLimitedError) as caught:
        mailgun.send(a_message())
    assert caught.value.retry_after > 3600


def test_mailgun_unknown_domain_is_ours_to_fix(httpserver, mailgun):
    httpserver.expect_request(MAILGUN_SEND).respond_with_json(
        {"message": "Domain not found: mg.example.com"}, status=404
    )
    with pytest.raises(TransientProviderError) as caught:
        mailgun.send(a_message())
    assert caught.value.code == "configuration"


def test_mailgun_malformed_success_is_ambiguous(httpserver, mailgun):
    httpserver.expect_ordered_request(MAILGUN_SEND).respond_with_data("<html>ok</html>")
    httpserver.expect_ordered_request(MAILGUN_SEND).respond_with_json({"unexpected": True})
    # The message may have been queued: resent only where RESEND_AMBIGUOUS allows (email does).
    with pytest.raises(AmbiguousProviderError):
        mailgun.send(a_message())
    with pytest.raises(AmbiguousProviderError):
        mailgun.send(a_message())


def test_mailgun_timeout_is_transient(httpserver, stall):
    httpserver.expect_request(MAILGUN_SEND).respond_with_handler(stall)
    provider = MailgunEmailProvider(
        "mailgun",
        {
            "API_KEY": "k",
            "SENDER_DOMAIN": "mg.example.com",
            "API_URL": httpserver.url_for("/v3"),
            "TIMEOUT": 0.3,
        },
    )
    with pytest.raises(TransientProviderError) as caught:
        provider.send(a_message())
    assert caught.value.code == "network"


# ------------------------------------------------------------------------------------------ SMTP


class Recorder:
    """An aiosmtpd handler that keeps what it received and answers what the test says."""

    def __init__(self):
        self.envelopes = []
        self.rcpt_reply = None
        self.data_reply = None
        self.logins = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 - aiosmtpd hook name
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd hook name
        if self.data_reply:
            return self.data_reply
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        self.logins.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=True)


@pytest.fixture
def smtp_server():
    recorder = Recorder()
    controller = Controller(
        recorder,
        hostname="127.0.0.1",
        port=closed_port(),
        authenticator=recorder.authenticate,
        auth_require_tls=False,
    )
    controller.start()
    recorder.port = controller.port
    yield recorder
    controller.stop()


def smtp_provider(url: str) -> SmtpEmailProvider:
    return SmtpEmailProvider("smtp", {"URL": url})


def test_smtp_url_forms():
    assert parse_smtp_url("smtp://mail.example.com") == {
        "host": "mail.example.com",
        "port": 25,
        "username": "",
        "password": "",
        "use_ssl": False,
        "use_tls": False,
        "timeout": 15.0,
    }
    implicit = parse_smtp_url("smtps://u%40x:p%2Fw@mail.example.com")
    assert (implicit["port"], implicit["use_ssl"], implicit["use_tls"]) == (465, True, False)
    assert (implicit["username"], implicit["password"]) == ("u@x", "p/w")
    starttls = parse_smtp_url("smtp://mail.example.com:587?starttls=1&timeout=3")
    assert (starttls["port"], starttls["use_tls"], starttls["timeout"]) == (587, True, 3.0)
    with pytest.raises(ValueError):
        parse_smtp_url("http://mail.example.com")


def test_smtp_without_url_is_left_out_of_the_chain():
    with pytest.raises(ProviderNotConfiguredError):
        smtp_provider("")


def test_smtp_sends_to_a_real_server(smtp_server):
    provider = smtp_provider(f"smtp://mailer:s%40cret@127.0.0.1:{smtp_server.port}")

    result = provider.send(a_message())

    assert smtp_server.logins == [("mailer", "s@cret")]
    envelope = smtp_server.envelopes[0]
    assert envelope.mail_from == "alerts@mg.example.com"
    assert envelope.rcpt_tos == ["ops@example.com"]
    received = email.message_from_bytes(envelope.content, policy=policy.default)
    assert received["Message-ID"] == result.provider_message_id
    assert result.provider_message_id.endswith("@mg.example.com>")
    assert received["List-Unsubscribe"] == "<https://comm.example.com/u/tok123>"
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert received["Subject"] == "Disk almost full"
    parts = {p.get_content_type(): p.get_content().strip() for p in received.iter_parts()}
    assert parts == {
        "text/plain": "The disk is 91% full.",
        "text/html": "<p>The disk is <b>91%</b> full.</p>",
    }


def test_smtp_refused_recipient_is_permanent_and_suppressed(smtp_server):
    smtp_server.rcpt_reply = "550 5.1.1 <ops@example.com>: no such user"
    with pytest.raises(PermanentProviderError) as caught:
        smtp_provider(f"smtp://127.0.0.1:{smtp_server.port}").send(a_message())
    assert caught.value.suppress
    assert caught.value.code == "hard_bounce"  # the suppression reason the pipeline records
    assert "550" in str(caught.value)


def test_smtp_deferral_is_transient(smtp_server):
    smtp_server.data_reply = "451 4.3.0 Mail server temporarily rejected message"
    with pytest.raises(TransientProviderError) as caught:
        smtp_provider(f"smtp://127.0.0.1:{smtp_server.port}").send(a_message())
    assert not caught.value.permanent
    assert not isinstance(caught.value, RateLimitedError)


def test_smtp_rate_limit(smtp_server):
    smtp_server.rcpt_reply = "450 4.7.1 Rate limit exceeded, slow down"
    with pytest.raises(RateLimitedError):
        smtp_provider(f"smtp://127.0.0.1:{smtp_server.port}").send(a_message())


def test_smtp_malformed_greeting_and_refused_connection_are_transient():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]

        def greet():
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"HELLO this is not SMTP\r\n")
                conn.recv(1024)

        thread = threading.Thread(target=greet, daemon=True)
        thread.start()
        with pytest.raises(TransientProviderError) as caught:
            smtp_provider(f"smtp://127.0.0.1:{port}?timeout=2").send(a_message())
        assert caught.value.code == "malformed"
        thread.join(5)

    with pytest.raises(TransientProviderError) as caught:
        smtp_provider(f"smtp://127.0.0.1:{closed_port()}?timeout=2").send(a_message())
    assert caught.value.code == "network"
