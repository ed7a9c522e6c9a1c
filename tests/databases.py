"""Throwaway databases for tests and benchmarks: a SQLite file, or a fresh PostgreSQL database that is
dropped afterwards (so runs never see each other's rows)."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
# Set by .ci/run: there PostgreSQL, Redis and the tools the service tests use must be present, and a test
# that cannot reach them fails instead of skipping (a skip would pass CI with the service untested).
REQUIRE_SERVICES = "DISTILLERY_TEST_REQUIRE_SERVICES"


def services_required() -> bool:
    return os.environ.get(REQUIRE_SERVICES, "") not in ("", "0")


def unavailable(reason: str) -> None:
    """Skip a test for lack of a service or tool, or fail it where CI requires them."""
    import pytest  # here: the benchmarks import this module too, without pytest

    if services_required():
        pytest.fail(f"{reason}; required here ({REQUIRE_SERVICES} is set)", pytrace=False)
    pytest.skip(reason)


def require_postgres() -> None:
    if not postgres_up():
        unavailable("PostgreSQL is not running on 127.0.0.1:5432 (.ci/run requires it)")


def postgres_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def temporary_database(kind: str, folder: Path, prefix: str = "dtest") -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'distillery.db'}"
        return
    import sqlalchemy as sa

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        from app.db.base import get_engine

        get_engine.cache_clear()  # close pooled connections before dropping
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
