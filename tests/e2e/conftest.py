"""Fixtures of the end-to-end tests: the real programs (skip, or fail under REQUIRE_E2E=1, when one is missing) and
a Stack that stops every process it started, whatever the test did."""

from __future__ import annotations

import pytest

from tests.e2e.stack import Stack
from tests.e2e.tools import require_programs


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Remember each phase's outcome on the test item, so a fixture can tell that its test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture(scope="session")
def alertmanager_programs() -> dict[str, str]:
    return require_programs("alertmanager", "amtool")


@pytest.fixture(scope="session")
def prometheus_programs(alertmanager_programs) -> dict[str, str]:
    return {**alertmanager_programs, **require_programs("prometheus")}


def _stack(request, tmp_path, programs):
    stack = Stack(tmp_path, programs)
    try:
        yield stack
    finally:
        stack.close()
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            print(stack.logs())  # shown under "Captured stdout teardown"


@pytest.fixture
def stack(request, tmp_path, alertmanager_programs):
    """Mock Rocket.Chat, relay and Alertmanager, started by the test as it needs them."""
    yield from _stack(request, tmp_path, alertmanager_programs)


@pytest.fixture
def prometheus_stack(request, tmp_path, prometheus_programs):
    """The same with Prometheus available."""
    yield from _stack(request, tmp_path, prometheus_programs)
