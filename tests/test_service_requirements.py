"""A missing service skips a test on a developer's machine, and fails it under .ci/run, which sets
DISTILLERY_TEST_REQUIRE_SERVICES so that CI cannot pass with the service tests skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import databases

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("value, outcome", [(None, pytest.skip.Exception), ("0", pytest.skip.Exception),
                                            ("1", pytest.fail.Exception)])
def test_missing_postgres_skips_unless_required(monkeypatch, value, outcome):
    monkeypatch.setattr(databases, "postgres_up", lambda: False)
    if value is None:
        monkeypatch.delenv(databases.REQUIRE_SERVICES, raising=False)
    else:
        monkeypatch.setenv(databases.REQUIRE_SERVICES, value)
    with pytest.raises(outcome, match="PostgreSQL is not running"):
        databases.require_postgres()


def test_a_running_postgres_neither_skips_nor_fails(monkeypatch):
    monkeypatch.setattr(databases, "postgres_up", lambda: True)
    monkeypatch.setenv(databases.REQUIRE_SERVICES, "1")
    databases.require_postgres()


def test_ci_requires_the_services_and_stops_when_they_do_not_start():
    script = (ROOT / ".ci" / "run").read_text()
    assert f"export {databases.REQUIRE_SERVICES}=1" in script
    assert "|| true" not in script  # a service that fails to start ends the run (set -e)
