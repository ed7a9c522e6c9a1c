"""The schema changes only through migrations: upgrading an empty database to head gives exactly the
models' schema (`alembic check` finds nothing to generate), on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command

from app.db.migrate import alembic_config, upgrade


def test_migrations_match_the_models(database_url):
    upgrade(database_url)
    command.check(alembic_config(database_url))  # raises if the models and migrations differ
    engine = sa.create_engine(database_url)
    try:
        tables = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"jobs", "stage_runs", "events", "artifacts", "models", "datasets", "api_keys",
            "idempotency_keys", "alembic_version"} <= tables


def test_downgrade_to_base_and_up_again(database_url):
    cfg = alembic_config(database_url)
    upgrade(database_url)
    command.downgrade(cfg, "base")
    engine = sa.create_engine(database_url)
    try:
        assert "jobs" not in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
    upgrade(database_url)
