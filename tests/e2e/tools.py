"""Finding the real programs the end-to-end and deploy-file tests run, and what to do when one is missing.

`make test` installs them (tests/e2e/install-tools.sh) when it runs as root; elsewhere a test that needs a missing
program skips with the command that installs it, except under REQUIRE_E2E=1 (set by .ci/run), where the skip is a
failure: CI must never pass by running none of these tests.
"""

from __future__ import annotations

import os
import shutil

import pytest

# Each program, the names it goes by (Debian's first, then upstream's) and the Debian package that ships it.
PROGRAMS = {
    "alertmanager": (("prometheus-alertmanager", "alertmanager"), "prometheus-alertmanager"),
    "amtool": (("amtool",), "prometheus-alertmanager"),
    "prometheus": (("prometheus",), "prometheus"),
    "promtool": (("promtool",), "prometheus"),
    "docker-compose": (("docker-compose",), "docker-compose"),
    "systemd-analyze": (("systemd-analyze",), "systemd"),
}


def require_e2e() -> bool:
    """True when a skipped end-to-end or deploy-file test must count as a failure (REQUIRE_E2E=1)."""
    return os.environ.get("REQUIRE_E2E", "").strip() == "1"


def find_program(program: str) -> str | None:
    names, _package = PROGRAMS[program]
    return next((path for path in map(shutil.which, names) if path), None)


def skip_or_fail(reason: str) -> None:
    """Skip the test, or fail it under REQUIRE_E2E=1."""
    if require_e2e():
        pytest.fail(f"{reason} (REQUIRE_E2E=1: this test may not be skipped)", pytrace=False)
    pytest.skip(reason)


def require_programs(*programs: str) -> dict[str, str]:
    """The path of each program; skips (or fails under REQUIRE_E2E=1) naming how to install the missing ones."""
    found = {program: find_program(program) for program in programs}
    missing = [program for program, path in found.items() if path is None]
    if missing:
        packages = sorted({PROGRAMS[program][1] for program in missing})
        skip_or_fail(
            f"needs {', '.join(missing)}: run `make test` as root (it installs them), or "
            f"`sudo apt-get install --no-install-recommends {' '.join(packages)}`"
        )
    return found
