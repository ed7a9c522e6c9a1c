"""Idempotency keys expire after 24 hours: the key then makes a new job (whatever the body), and
`distillery gc` purges expired keys while keeping live ones."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, update

from app.db.base import session_scope, utcnow
from app.db.models import IdempotencyKey
from app.gc import run_gc
from app.repositories.jobs import IDEMPOTENCY_TTL
from tests.app.test_jobs_api import body, count_jobs, reg  # noqa: F401  (reg: a fixture)


def age_keys(settings, by: timedelta, key: str | None = None) -> None:
    with session_scope(settings.sqlalchemy_url) as s:
        stmt = update(IdempotencyKey).values(created_at=utcnow() - by)
        s.execute(stmt.where(IdempotencyKey.key == key) if key else stmt)


def test_an_expired_key_makes_a_new_job(client, settings, reg):  # noqa: F811
    headers = {"Idempotency-Key": "nightly-2026-11-28"}
    first = client.post("/v1/jobs", json=body(reg), headers=headers)
    assert first.status_code == 201
    age_keys(settings, IDEMPOTENCY_TTL - timedelta(minutes=5))  # still live: a replay
    assert client.post("/v1/jobs", json=body(reg), headers=headers).json()["id"] == first.json()["id"]

    age_keys(settings, IDEMPOTENCY_TTL + timedelta(minutes=5))  # expired: a new job, even with another body
    fresh = client.post("/v1/jobs", json=body(reg, seed=7), headers=headers)
    assert fresh.status_code == 201 and fresh.json()["id"] != first.json()["id"], fresh.text
    replay = client.post("/v1/jobs", json=body(reg, seed=7), headers=headers)  # and the key is live again
    assert replay.status_code == 200 and replay.json()["id"] == fresh.json()["id"]
    assert count_jobs(settings) == 2


def test_gc_purges_expired_keys_only(client, settings, reg):  # noqa: F811
    for key in ("old", "new"):
        assert client.post("/v1/jobs", json=body(reg), headers={"Idempotency-Key": key}).status_code in (200, 201)
    age_keys(settings, IDEMPOTENCY_TTL + timedelta(hours=1), key="old")
    removed = run_gc(settings)
    assert removed.idempotency_keys == 1
    with session_scope(settings.sqlalchemy_url) as s:
        assert list(s.scalars(select(IdempotencyKey.key))) == ["new"]
        assert s.scalar(select(func.count()).select_from(IdempotencyKey)) == 1
