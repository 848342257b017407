"""The schema says what the endpoints answer: the shape of their lists, their error answers; and a
filter or page value an endpoint does not know is a 400 naming it, not silently ignored."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def client_with(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.fixture
def service(make_service_token):
    client = client_with(make_service_token("svc", ["notifications:send", "templates:manage"]))
    template = {
        "key": "welcome",
        "name": "Welcome",
        "category": "transactional",
        "channel": "email",
        "default_language": "en",
    }
    assert client.post("/api/v1/templates", template, format="json").status_code == 201
    return client


@pytest.fixture
def user(make_user_token):
    return client_with(make_user_token("contract-user"))


@pytest.fixture
def staff(make_user_token):
    return client_with(make_user_token("contract-staff", staff=True))


@pytest.fixture(scope="module")
def schema(django_db_blocker):
    with django_db_blocker.unblock():
        response = APIClient().get("/api/schema/?format=json")
    assert response.status_code == 200
    return response.json()


def resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def documented(schema: dict, path: str, method: str, status: int) -> dict:
    responses = schema["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path}: {status} is not documented"
    content = responses[str(status)].get("content", {}).get("application/json")
    return resolve(schema, content["schema"]) if content else {}


def assert_conforms(schema: dict, body, node: dict) -> None:
    """The top of ``body`` is what the schema says: an object with its properties, or a list."""
    if node.get("type") == "array":
        assert isinstance(body, list), f"the schema says a list, the endpoint answered {body!r}"
        return
    assert isinstance(body, dict), f"the schema says an object, the endpoint answered {body!r}"
    assert set(body) <= set(node["properties"]), (set(body), set(node["properties"]))
    assert set(node.get("required", [])) <= set(body)


@pytest.mark.parametrize(
    ("who", "path", "schema_path"),
    [
        ("service", "/api/v1/notifications/requests", "/api/v1/notifications/requests/"),
        ("service", "/api/v1/templates/welcome/versions", "/api/v1/templates/{key}/versions/"),
        ("service", "/api/v1/templates/versions", "/api/v1/templates/versions/"),
        ("user", "/api/v1/devices", "/api/v1/devices/"),
        ("user", "/api/v1/notifications/history", "/api/v1/notifications/history/"),
        ("user", "/api/v1/notifications/unread", "/api/v1/notifications/unread/"),
    ],
)
def test_lists_answer_the_shape_the_schema_gives(request, schema, who, path, schema_path):
    response = request.getfixturevalue(who).get(path)
    assert response.status_code == 200, response.content
    assert_conforms(schema, response.json(), documented(schema, schema_path, "get", 200))


def test_a_cancel_answers_what_the_schema_says(schema, service, make_service_token):
    sent = service.post(
        "/api/v1/notifications",
        {
            "recipients": [{"email": "c@example.com"}],
            "channels": ["email"],
            "content": {"subject": "s", "body": "b"},
        },
        format="json",
    )
    assert sent.status_code == 202, sent.content
    response = service.delete(f"/api/v1/notifications/requests/{sent.json()['request_id']}")
    node = documented(schema, "/api/v1/notifications/requests/{request_id}/", "delete", 200)
    assert response.status_code == 200
    assert_conforms(schema, response.json(), node)


@pytest.mark.parametrize(
    ("who", "path", "field"),
    [
        ("service", "/api/v1/notifications/requests?cancelled=maybe", "cancelled"),
        ("service", "/api/v1/notifications/requests?since=yesterday", "since"),
        ("service", "/api/v1/notifications/requests?limit=0", "limit"),
        ("service", "/api/v1/notifications/requests?limit=null", "limit"),
        ("service", "/api/v1/notifications/requests?cursor=garbage", "cursor"),
        ("service", "/api/v1/templates/welcome/versions?offset=null", "offset"),
        ("service", "/api/v1/templates/welcome/versions?limit=-5", "limit"),
        ("service", "/api/v1/templates?offset=-1", "offset"),
        ("service", "/api/v1/templates?active=perhaps", "active"),
        ("service", "/api/v1/templates?channel=fax", "channel"),
        ("service", "/api/v1/templates/versions?status=publishd", "status"),
        ("user", "/api/v1/notifications/history?unread=maybe", "unread"),
        ("user", "/api/v1/notifications/history?limit=abc", "limit"),
        ("staff", "/api/v1/outbox?channel=fax", "channel"),
    ],
)
def test_a_filter_value_the_endpoint_does_not_know_is_a_400(request, schema, who, path, field):
    response = request.getfixturevalue(who).get(path)
    assert response.status_code == 400, (path, response.status_code, response.content)
    body = response.json()
    assert body["code"] == "validation_error"
    assert field in body["fields"], body


@pytest.mark.parametrize(
    ("who", "path"),
    [
        ("service", "/api/v1/notifications/requests?cancelled=false&since=2026-01-01&limit=5"),
        ("service", "/api/v1/notifications/requests?since=2026-01-01T10:00:00Z"),
        ("service", "/api/v1/templates/versions?status=approved&limit=10&offset=0"),
        ("service", "/api/v1/templates?active=true&channel=email"),
        ("user", "/api/v1/notifications/history?unread=true&limit=200"),
        ("staff", "/api/v1/outbox?channel=email"),
    ],
)
def test_good_filter_values_still_answer(request, who, path):
    assert request.getfixturevalue(who).get(path).status_code == 200


def test_every_operation_documents_its_error_answers(schema):
    error = schema["components"]["schemas"]["Error"]
    assert set(error["properties"]) == {"code", "detail", "fields"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert {"400", "429", "503"} <= set(responses), (method, path)
            limited = responses["429"]
            assert "Retry-After" in limited["headers"], (method, path)
            if any(operation.get("security", [{}])):
                assert {"401", "403"} <= set(responses), (method, path)
            if "{" in path:
                assert "404" in responses, (method, path)


def test_an_error_answer_has_the_documented_shape(schema, service, user):
    answers = [
        (service.get("/api/v1/notifications/requests?limit=x"), "/api/v1/notifications/requests/"),
        (APIClient().get("/api/v1/notifications/requests"), "/api/v1/notifications/requests/"),
        (user.get("/api/v1/notifications/requests"), "/api/v1/notifications/requests/"),
    ]
    for response, path in answers:
        node = documented(schema, path, "get", response.status_code)
        assert_conforms(schema, response.json(), node)


def test_templates_and_preferences_list_the_same_categories(service, user):
    template_categories = [c["key"] for c in service.get("/api/v1/templates/categories").json()]
    preferences = user.get("/api/v1/notifications/preferences").json()
    assert template_categories == [c["key"] for c in preferences["categories"]]
    assert "alerts" in template_categories
