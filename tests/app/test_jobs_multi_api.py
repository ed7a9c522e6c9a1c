"""POST /v1/jobs with tasks (dataset ids per task) and search: stored as the engine reads them, and refused with
a 422 naming the field when the task config or the search space cannot run."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.db.base import session_scope
from app.db.migrate import upgrade
from app.db.models import Job, StageRun
from app.settings import Settings
from worker.engine import parse_recipe

from .test_jobs_api import reg  # noqa: F401  (the fixture: team-a's datasets and tiny BERT)


@pytest.fixture
def settings(database_url, tmp_path) -> Settings:
    # Redis db 10 without a flush: the API tests' db 9 is flushed by concurrent runs; nothing here reads the queue
    s = Settings(data_dir=tmp_path / "data", database_url=database_url, redis_url="redis://127.0.0.1:6379/10",
                 model_roots=[tmp_path / "models"], max_upload_bytes=2 * 1024 * 1024)
    (tmp_path / "models").mkdir()
    upgrade(s.sqlalchemy_url)
    return s


def multi(ids: dict, **over) -> dict:
    out = {"teacher": {"model": ids["model"]}, "task": "feature-extraction",
           "tasks": {"topics": {"train": ids["train"], "eval": ids["eval_sts"], "gate": 0.5},
                     "pairs": {"train": ids["eval_sts"], "eval": ids["eval_sts"], "weight": 2.0}},
           "stages": [{"kind": "distill", "epochs": 1}]}
    out.update(over)
    return out


SEARCH = {"space": {"depth": [1, 2], "sparsity": [0, 0.5], "quantization": ["none", "int8-dynamic"]}}


def test_tasks_and_search_are_accepted_with_their_datasets_resolved(client, settings, reg):  # noqa: F811
    r = client.post("/v1/jobs", json=multi(reg, strategy="both"))
    assert r.status_code == 201, r.text
    r2 = client.post("/v1/jobs", json=multi(reg, search=SEARCH, gates={"per_task": {"pairs": 0.4}}))
    assert r2.status_code == 201, r2.text
    assert r2.json()["stages"] == []  # trials, not a fixed list of stages: events tell them apart
    with session_scope(settings.sqlalchemy_url) as s:
        row = s.get(Job, r.json()["id"])
        assert row.recipe["tasks"]["topics"]["train"] == "uploads/train.jsonl"  # a store key, like data.train
        assert row.recipe["tasks"]["pairs"] == {"train": "uploads/eval_sts.jsonl", "eval": "uploads/eval_sts.jsonl",
                                                "gate": None, "weight": 2.0}
        assert parse_recipe(row.recipe).strategy_used() == "both"
        assert s.scalar(select(func.count()).select_from(StageRun).where(StageRun.job_id == row.id)) == 0
        searched = parse_recipe(s.get(Job, r2.json()["id"]).recipe)
        assert searched.search.space.depth == [1, 2] and searched.strategy_used() == "shared"


@pytest.mark.parametrize("change, field", [
    (lambda b, ids: b["tasks"]["topics"].update(train="ds_unknown"), "tasks.topics.train"),
    (lambda b, ids: b.update(data={"train": ids["train"]}), "data"),
    (lambda b, ids: b["tasks"]["pairs"].update(eval="ds_unknown"), "tasks.pairs.eval"),
    (lambda b, ids: b.update(search={"space": {"depth": [2, 9]}}), "search.space.depth"),
    (lambda b, ids: b.update(search={"space": {"depth": [1], "sparsity": [1.5]}}), "search.space.sparsity.0"),
    (lambda b, ids: b.update(search=SEARCH, strategy="per-task"), "strategy"),
    (lambda b, ids: b.update(search=SEARCH, stages=[{"kind": "quantize", "method": "int8-dynamic"}]), "stages"),
    (lambda b, ids: b.update(gates={"per_task": {"nope": 0.9}}), "gates.per_task.nope"),
])
def test_bad_task_configs_and_search_spaces_are_422_naming_the_field(client, settings, reg, change,  # noqa: F811
                                                                      field):
    payload = multi(reg)
    change(payload, reg)
    r = client.post("/v1/jobs", json=payload)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == field, r.json()
    with session_scope(settings.sqlalchemy_url) as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 0
