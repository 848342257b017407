"""API conventions: error shape, trailing slashes, OpenAPI schema, docs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.django_db


def test_paths_answer_with_and_without_trailing_slash(user_client):
    for path in ("/api/v1/me", "/api/v1/me/"):
        response = user_client.get(path)
        assert response.status_code == 200, path
    assert user_client.get("/health/ready/").status_code == 200


def test_unknown_path_is_a_json_404(user_client):
    response = user_client.get("/api/v1/does-not-exist")
    assert response.status_code == 404
    assert response.json() == {"code": "not_found", "detail": "Not found."}


def test_wrong_method_is_405_with_a_code(user_client):
    response = user_client.delete("/api/v1/me")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


def test_expired_token_body_and_header(api_client, make_user_token):
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_user_token(ttl=-600)}")
    response = api_client.get("/api/v1/me")
    assert response.status_code == 401
    assert response.json() == {"code": "token_expired", "detail": "Token has expired"}
    assert 'error="invalid_token"' in response["WWW-Authenticate"]


def test_garbage_token(api_client):
    api_client.credentials(HTTP_AUTHORIZATION="Bearer not-a-jwt")
    response = api_client.get("/api/v1/me")
    assert response.status_code == 401
    assert response.json()["code"] == "token_invalid"


def test_me_contract(api_client, make_user_token):
    token = make_user_token(
        "zoe",
        email="zoe@example.com",
        phone="+447911123456",
        name="Zoe",
        locale="en-GB",
        timezone="Europe/London",
        roles=["support_agent"],
    )
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    body = api_client.get("/api/v1/me").json()
    assert {
        k: body[k] for k in ("user_id", "name", "email", "phone", "locale", "timezone", "roles")
    } == {
        "user_id": "zoe",
        "name": "Zoe",
        "email": "zoe@example.com",
        "phone": "+447911123456",
        "locale": "en-GB",
        "timezone": "Europe/London",
        "roles": ["support_agent"],
    }


def test_request_id_is_returned_and_kept_from_the_caller(client):
    response = client.get("/health/live", HTTP_X_REQUEST_ID="abc-123")
    assert response["X-Request-Id"] == "abc-123"
    generated = client.get("/health/live")["X-Request-Id"]
    assert len(generated) == 32


def test_schema_generates_without_warnings():
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "spectacular",
            "--validate",
            "--fail-on-warn",
            "--file",
            "/dev/null",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_schema_and_docs_are_served(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/v1/me" in paths or "/api/v1/me/" in paths
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger" in docs.content.lower()


def test_admin_login_page(client):
    response = client.get("/admin/login/")
    assert response.status_code == 200


def test_admin_static_files_are_served(client):
    response = client.get("/static/admin/css/base.css")
    assert response.status_code == 200


def test_cors_follows_allowed_origins(client, settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]
    allowed = client.options(
        "/api/v1/me",
        HTTP_ORIGIN="https://app.example.com",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET",
    )
    assert allowed["Access-Control-Allow-Origin"] == "https://app.example.com"
    other = client.options(
        "/api/v1/me",
        HTTP_ORIGIN="https://evil.example.com",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET",
    )
    assert "Access-Control-Allow-Origin" not in other


def test_oversized_body_is_413(api_client, make_service_token, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_service_token()}")
    response = api_client.post(
        "/api/v1/notifications", {"recipients": [], "pad": "x" * 5000}, format="json"
    )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


def test_a_post_keeps_its_body_with_or_without_the_slash(api_client, make_service_token):
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_service_token()}")
    for path in ("/api/v1/notifications", "/api/v1/notifications/"):
        response = api_client.post(path, {"recipients": []}, format="json")
        assert response.status_code == 400, path  # validated, not redirected
        assert "recipients" in response.json()["fields"]
