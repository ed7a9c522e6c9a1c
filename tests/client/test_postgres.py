"""The calls whose behaviour rests on the database, on PostgreSQL: an idempotent submission (the unique key
decides), cursor pages across several jobs with a status filter, and cancelling queued jobs. No worker: the
jobs stay queued (their messages go to Redis db 14, where the session's SQLite worker finds no such job)."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.db.migrate import upgrade
from app.settings import Settings
from distillery import Client
from distillery.client import ValidationError
from tests import fixtures
from tests.app.conftest import Server, make_key
from tests.client.conftest import REDIS_URL, job_body
from tests.databases import require_postgres, temporary_database


@pytest.fixture
def pg_client(tmp_path, tiny_bert):
    require_postgres()
    from app.api.main import create_app

    with temporary_database("postgres", tmp_path, prefix="dctest") as url:
        settings = Settings(data_dir=tmp_path / "data", database_url=url, redis_url=REDIS_URL,
                            model_roots=[tmp_path / "models"])
        shutil.copytree(tiny_bert, tmp_path / "models" / "tiny-bert")
        upgrade(settings.sqlalchemy_url)
        with Server(create_app(settings)) as srv, Client(srv.url, make_key(settings, "team-a")) as c:
            yield c, tmp_path


def test_idempotency_pages_and_cancel_on_postgres(pg_client):
    c, root = pg_client
    data = fixtures.make_data(root / "src")
    model = c.models.register("tiny", path=root / "models" / "tiny-bert")
    train, ev = c.datasets.upload(data["train"]), c.datasets.upload(data["eval_text"])
    body = job_body(model.id, train.id, ev.id)

    with ThreadPoolExecutor(4) as pool:  # the same key at once: one job
        ids = set(pool.map(lambda _: c.jobs.create(body, idempotency_key="pg-same").id, range(4)))
    assert len(ids) == 1
    with pytest.raises(ValidationError) as err:
        c.jobs.create({**body, "seed": 3}, idempotency_key="pg-same")
    assert err.value.code == "idempotency_key_reused"

    others = [c.jobs.create(body).id for _ in range(2)]  # a fresh key each: two more jobs
    assert len(set(others) | ids) == 3
    listed = [j.id for j in c.jobs.list(page_size=1)]
    assert listed == [*reversed(others), *ids]  # newest first, across three pages
    assert c.jobs.cancel(others[0]).status == "cancelled"  # queued: cancelled at once
    assert c.jobs.cancel(others[0]).status == "cancelled"  # and again: idempotent
    assert [j.id for j in c.jobs.list(status="queued", page_size=1)] == [others[1], *ids]
    assert [j.id for j in c.jobs.list(status=["cancelled"])] == [others[0]]
