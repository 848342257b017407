"""schemathesis against the OpenAPI schema, on a live uvicorn server, as a service and as a user.

Each operation gets a bounded number of generated requests (``EXAMPLES``); every response must not
be a 5xx, must match the schema (status code documented, body valid) and carry the documented
content type. One test per principal walks every operation, so the database is reset once per
principal rather than once per operation.

``KNOWN`` lists the failures filed as bugs: each must still fail (strict, as a strict xfail
would), so a fix is noticed and its entry removed; any other failure fails the test.
"""

from __future__ import annotations

import json

import hypothesis
import pytest
import requests
import schemathesis
from django.test import Client
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

EXAMPLES = 6
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
SERVICE_SCOPES = [
    "notifications:send",
    "notifications:read",
    "messages:send",
    "templates:manage",
    "templates:read",
    "templates:render",
    "campaigns:manage",
    "users:read",
]

# (principal, "METHOD /path", failure) -> the bug it is (issue 14, fixed on other branches).
KNOWN: dict[tuple[str, str, str], str] = {}

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


def load_schema() -> schemathesis.schemas.BaseSchema:
    response = Client().get("/api/schema/?format=json")
    assert response.status_code == 200
    return schemathesis.openapi.from_dict(json.loads(response.content))


def run_operations(base_url: str, token: str, principal: str) -> dict[tuple[str, str, str], str]:
    """Runs every operation; returns the failures as {(principal, operation, check): message}."""
    schema = load_schema()
    session = requests.Session()
    headers = {"Authorization": f"Bearer {token}"}
    failures: dict[tuple[str, str, str], str] = {}
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an invalid schema raises here
        label = f"{operation.method.upper()} {operation.path}"

        @hypothesis.settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        )
        @hypothesis.given(case=operation.as_strategy())
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(
                base_url=base_url, session=session, headers=headers, checks=CHECKS
            )

        try:
            run()
        except FailureGroup as group:
            for failure in group.exceptions:
                key = (principal, label, type(failure).__name__)
                failures.setdefault(key, str(failure)[:800])
        except Exception as exc:  # any other error is reported with its operation
            failures.setdefault((principal, label, type(exc).__name__), str(exc)[:800])
    return failures


@pytest.mark.parametrize("principal", ["service", "user"])
def test_the_api_answers_as_its_schema_says(
    live_asgi, make_service_token, make_user_token, principal
):
    token = (
        make_service_token("schemathesis", SERVICE_SCOPES)
        if principal == "service"
        else make_user_token("schemathesis-user", email="fuzz@example.com")
    )
    failures = run_operations(live_asgi.url, token, principal)
    unexpected = {k: v for k, v in failures.items() if k not in KNOWN}
    fixed = [k for k in KNOWN if k[0] == principal and k not in failures]
    assert not unexpected, "\n\n".join(f"{k}: {v}" for k, v in unexpected.items())
    assert not fixed, f"fixed, remove from KNOWN: {fixed}"
