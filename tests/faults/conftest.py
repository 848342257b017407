"""The fault suite: each scenario injects a fault into real processes (uvicorn, Celery workers,
beat, PostgreSQL, Redis, RabbitMQ reached through ``harness.FaultProxy``) and reports what it
injected and counted. The reports are printed at the end of the run (``pytest_terminal_summary``)
whether or not the scenario passed."""

from __future__ import annotations

import pytest

REPORTS: list[str] = []


@pytest.fixture
def fault_report(request):
    """``fault_report("injected …", "counted …")``: lines printed under the scenario's name at
    the end of the run."""

    def report(*lines: str) -> None:
        REPORTS.append(f"{request.node.name}:")
        REPORTS.extend(f"    {line}" for line in lines)

    return report


def pytest_terminal_summary(terminalreporter):
    if REPORTS:
        terminalreporter.section("fault suite")
        for line in REPORTS:
            terminalreporter.write_line(line)
