"""/v1/jobs over real HTTP, on SQLite and PostgreSQL: submission and its dry run, idempotency, listing,
cancellation, reports and ownership. Models and datasets are registered by inserting rows directly."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis
from sqlalchemy import func, select, update

from app.db.base import new_id, session_scope
from app.db.models import DatasetRecord, IdempotencyKey, Job, ModelRecord, StageRun
from tests.app.assets_helpers import MINIMAL_REPORT
from worker.engine import parse_recipe

KINDS = {"train": "text", "eval_cls": "classification", "eval_sts": "similarity"}


@pytest.fixture
def reg(settings, model_dir, data) -> dict[str, str]:
    """team-a's datasets and tiny BERT, and a model that belongs to team-b."""
    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    ids: dict[str, str] = {}
    with session_scope(settings.sqlalchemy_url) as s:
        for name, kind in KINDS.items():
            path = shutil.copy(data[name], settings.uploads_dir / f"{name}.jsonl")
            raw = path.read_bytes()
            ids[name] = new_id("ds")
            # stored relative to data_dir, as the datasets endpoint stores them
            s.add(DatasetRecord(id=ids[name], owner="team-a", name=name, kind=kind,
                                path=str(path.relative_to(settings.data_dir)),
                                rows=raw.count(b"\n"), columns=[], size_bytes=len(raw),
                                sha256=hashlib.sha256(raw).hexdigest()))
        for key, owner in (("model", "team-a"), ("other_model", "team-b")):
            ids[key] = new_id("mdl")
            s.add(ModelRecord(id=ids[key], owner=owner, name="tiny-bert",
                              source={"source": "local", "path": str(model_dir)}))
    return ids


def body(reg: dict, **over) -> dict:
    out = {"teacher": {"model": reg["model"]}, "task": "feature-extraction",
           "data": {"train": reg["train"], "eval": {"sts": reg["eval_sts"]}},
           "stages": [{"kind": "distill", "student": {"layers": [0, 2]}, "epochs": 1},
                      {"kind": "quantize", "method": "int8-dynamic"}]}
    out.update(over)
    return out


def queued_ids(settings, queue: str = "cpu") -> list[str]:
    """Job ids in the broker: kombu's Redis message is JSON whose base64 body is Celery's [args, kwargs, embed]."""
    ids = []
    for raw in redis.Redis.from_url(settings.redis_url).lrange(queue, 0, -1):
        msg = json.loads(raw)
        assert msg["headers"]["task"] == "distillery.run_job"
        ids.append(json.loads(base64.b64decode(msg["body"]))[0][0])
    return ids


def insert_job(settings, owner: str = "team-a", status: str = "queued", **kw) -> str:
    with session_scope(settings.sqlalchemy_url) as s:
        job = Job(id=new_id("job"), owner=owner, status=status, queue="cpu", request={}, recipe={}, **kw)
        s.add(job)
    return job.id


def set_job(settings, job_id: str, **values) -> None:
    with session_scope(settings.sqlalchemy_url) as s:
        s.execute(update(Job).where(Job.id == job_id).values(**values))


def count_jobs(settings) -> int:
    with session_scope(settings.sqlalchemy_url) as s:
        return s.scalar(select(func.count()).select_from(Job))


def test_submit_validates_stores_and_enqueues(client, settings, reg, model_dir):
    r = client.post("/v1/jobs", json=body(reg))
    assert r.status_code == 201, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}" == job["links"]["self"]
    assert job["status"] == "queued" and job["queue"] == "cpu" and job["attempts"] == 0
    assert [(s["index"], s["kind"], s["status"]) for s in job["stages"]] == [(0, "distill", "pending"),
                                                                             (1, "quantize", "pending")]
    assert job["request"]["teacher"] == {"model": reg["model"]} and job["failure"] is None
    assert job["links"]["events"] == f"/v1/jobs/{job['id']}/events"
    assert queued_ids(settings) == [job["id"]]

    with session_scope(settings.sqlalchemy_url) as s:
        row = s.get(Job, job["id"])
        assert row.owner == "team-a" and row.status == "queued"
        assert row.recipe["teacher"] == {"source": "local", "path": str(model_dir)}
        assert row.recipe["data"]["train"] == "uploads/train.jsonl"  # a store key, read under each data_dir
        assert s.scalar(select(func.count()).select_from(StageRun).where(StageRun.job_id == row.id)) == 2
        assert parse_recipe(row.recipe).stages[0].student.layers == [0, 2]  # what the worker will read

    got = client.get(r.headers["location"])
    assert got.status_code == 200 and got.json() == job

    # a CUDA recipe goes to the GPU workers; this host needs no GPU to dry-run it
    gpu = client.post("/v1/jobs", json=body(reg, device="cuda"))
    assert gpu.status_code == 201 and gpu.json()["queue"] == "gpu"
    assert queued_ids(settings, "gpu") == [gpu.json()["id"]] and queued_ids(settings) == [job["id"]]


def test_a_cuda_recipe_is_refused_when_no_gpu_worker_serves(settings, api_key, reg):
    from app.api.main import create_app

    from .conftest import Server

    with Server(create_app(settings.model_copy(update={"gpu_workers": False}))) as srv:
        r = httpx.post(f"{srv.url}/v1/jobs", json=body(reg, device="cuda"),
                       headers={"Authorization": f"Bearer {api_key}"}, timeout=60)
        cpu = httpx.post(f"{srv.url}/v1/jobs", json=body(reg), headers={"Authorization": f"Bearer {api_key}"},
                         timeout=60)
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    error = r.json()["errors"][0]
    assert error["field"] == "device" and error["code"] == "no_gpu_worker"
    assert "no GPU worker serves this instance" in error["message"]
    assert cpu.status_code == 201  # the same recipe on the CPU runs
    assert queued_ids(settings, "gpu") == [] and count_jobs(settings) == 1


@pytest.mark.parametrize("cuda", [False, True])
def test_serve_says_whether_a_gpu_worker_serves(monkeypatch, cuda):
    import torch

    from app.embedded import declare_gpu_workers
    from app.settings import Settings

    monkeypatch.setenv("DISTILLERY_GPU_WORKERS", "")  # recorded, so what the launcher writes is undone after
    monkeypatch.delenv("DISTILLERY_GPU_WORKERS")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    declare_gpu_workers(Settings())
    assert Settings().gpu_workers is cuda  # what the API and the worker then read
    monkeypatch.setenv("DISTILLERY_GPU_WORKERS", "true")  # set by the operator: left alone
    declare_gpu_workers(Settings())
    assert Settings().gpu_workers is True


BAD = [  # (what, body changes, field the 422 names)
    ("stage typo", {"stages": [{"kind": "distill", "epochz": 1}]}, "stages.0.epochz"),
    ("unknown stage", {"stages": [{"kind": "distil"}]}, "stages.0"),
    ("sparsity out of range", {"stages": [{"kind": "prune", "method": "magnitude", "sparsity": 1.5}]},
     "stages.0.sparsity"),
    ("missing layer", {"stages": [{"kind": "distill", "student": {"layers": [0, 7]}}]}, "stages.0.student.layers"),
    ("top-level typo", {"stagse": []}, "stagse"),
    ("dataset of the wrong kind", {"task": "causal-lm", "data": {"eval": {"topics": "eval_cls"}}, "stages": []},
     "data.eval.topics"),
    ("model without the task's head", {"task": "sequence-classification", "stages": [],
                                       "data": {"eval": {"topics": "eval_cls"}}}, "teacher"),
    ("unknown dataset", {"data": {"train": "train", "eval": {"sts": "ds_nope"}}}, "data.eval.sts"),
    ("another owner's model", {"teacher": {"model": "other_model"}}, "teacher.model"),
    ("gate for no eval task", {"gates": {"per_task": {"topics": 0.9}}}, "gates.per_task.topics"),
    ("unregistered local path", {"teacher": {"source": "local", "path": "/etc"}}, "teacher.source"),
]


def test_submit_refuses_recipes_that_cannot_run(client, settings, reg):
    for what, changes, field in BAD:
        changes = json.loads(json.dumps(changes))
        if "data" in changes:  # names of registered datasets -> their ids
            data = changes["data"]
            data["train"] = reg.get(data.get("train"), data.get("train"))
            data["eval"] = {k: reg.get(v, v) for k, v in data.get("eval", {}).items()}
        if "model" in changes.get("teacher", {}):
            changes["teacher"]["model"] = reg[changes["teacher"]["model"]]
        r = client.post("/v1/jobs", json=body(reg, **changes))
        assert r.status_code == 422, (what, r.text)
        problem = r.json()
        assert r.headers["content-type"].startswith("application/problem+json"), what
        assert problem["request_id"] and problem["status"] == 422, what
        assert problem["errors"][0]["field"] == field, (what, problem)
    assert count_jobs(settings) == 0 and queued_ids(settings) == []


def test_idempotency_key(client, other_client, settings, reg):
    headers = {"Idempotency-Key": "k-1"}
    first = client.post("/v1/jobs", json=body(reg), headers=headers)
    again = client.post("/v1/jobs", json=body(reg), headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"] and again.headers["location"] == first.headers["location"]
    assert count_jobs(settings) == 1 and queued_ids(settings) == [first.json()["id"]]

    other = client.post("/v1/jobs", json=body(reg, seed=1), headers=headers)
    assert other.status_code == 422 and other.json()["errors"][0]["field"] == "Idempotency-Key"
    # keys belong to an owner: team-b's k-1 is a key of its own
    bundled = {"teacher": {"source": "bundled"}, "task": "feature-extraction"}
    theirs = other_client.post("/v1/jobs", json=bundled, headers=headers)
    assert theirs.status_code == 201 and theirs.json()["id"] != first.json()["id"]

    # identical requests racing on a fresh key: the unique constraint lets one job through
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: client.post("/v1/jobs", json=body(reg), headers={"Idempotency-Key": "k-2"}),
                                range(4)))
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 201]
    assert len({a.json()["id"] for a in answers}) == 1
    with session_scope(settings.sqlalchemy_url) as s:
        assert s.scalar(select(func.count()).select_from(IdempotencyKey)) == 3
    assert count_jobs(settings) == 3


def test_list_pagination_and_filters(client, settings):
    now = datetime.now(UTC)
    states = ["queued", "running", "succeeded", "failed", "running"]
    ids = [insert_job(settings, status=st, created_at=now - timedelta(hours=10 - i)) for i, st in enumerate(states)]
    insert_job(settings, owner="team-b")  # never listed for team-a

    seen, after = [], None
    for _ in range(3):
        page = client.get("/v1/jobs", params={"limit": 2, **({"after": after} if after else {})}).json()
        seen += [j["id"] for j in page["data"]]
        after = page["next_cursor"]
        if not page["has_more"]:
            break
    assert seen == sorted(ids, reverse=True) and after is None  # newest first, across pages

    def listed(**params) -> set[str]:
        r = client.get("/v1/jobs", params=params)
        assert r.status_code == 200, r.text
        return {j["id"] for j in r.json()["data"]}

    assert listed(status="running") == {ids[1], ids[4]}
    assert listed(status="queued,failed") == listed(status=["queued", "failed"]) == {ids[0], ids[3]}
    cut = (now - timedelta(hours=8, minutes=30)).isoformat()
    assert listed(created_after=cut) == set(ids[2:])
    assert listed(created_before=cut) == set(ids[:2])
    assert listed(created_after=cut, created_before=(now - timedelta(hours=6, minutes=30)).isoformat(),
                  status="succeeded,running") == {ids[2]}
    for params, field in (({"status": "runing"}, "status"), ({"created_after": "yesterday"}, "created_after"),
                          ({"limit": 201}, "limit")):
        r = client.get("/v1/jobs", params=params)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == field, r.text
    assert client.get("/v1/jobs", params={"after": "!!"}).status_code == 400


def test_cancel(client, settings, reg):
    job = client.post("/v1/jobs", json=body(reg)).json()
    r = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "cancelled" and r.json()["finished_at"]
    with session_scope(settings.sqlalchemy_url) as s:
        row = s.get(Job, job["id"])
        assert row.cancel_requested and row.status == "cancelled"
    assert queued_ids(settings) == [job["id"]]  # the one message; the worker's claim skips a cancelled row
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 409

    running = insert_job(settings, status="running")
    for _ in range(2):  # cancelling twice is accepted
        r = client.post(f"/v1/jobs/{running}/cancel")
        assert r.status_code == 202 and r.json()["status"] == "cancelling" and r.json()["finished_at"] is None
    set_job(settings, running, status="succeeded")
    r = client.post(f"/v1/jobs/{running}/cancel")
    assert r.status_code == 409 and r.json()["type"].endswith("job_finished")


def test_report(client, settings):
    job_id = insert_job(settings, status="running")
    r = client.get(f"/v1/jobs/{job_id}/report")
    assert r.status_code == 409 and r.json()["type"].endswith("job_not_finished")
    set_job(settings, job_id, status="cancelled")
    assert client.get(f"/v1/jobs/{job_id}/report").status_code == 404
    report = MINIMAL_REPORT
    set_job(settings, job_id, status="succeeded", report=report, failure_code=None)
    r = client.get(f"/v1/jobs/{job_id}/report")
    assert r.status_code == 200 and r.json() == report  # as stored: no field added, none dropped
    spec = client.get("/openapi.json").json()
    typed = spec["paths"]["/v1/jobs/{job_id}/report"]["get"]["responses"]["200"]["content"]["application/json"]
    assert typed["schema"] == {"$ref": "#/components/schemas/Report"}
    assert {"StageRow", "Evaluation", "TaskResult", "SearchSection"} <= set(spec["components"]["schemas"])


def test_job_shows_progress_and_failure(client, settings):
    start = datetime(2025, 1, 1, 12, tzinfo=UTC)
    job_id = insert_job(settings, status="failed", current_stage="0:distill", started_at=start,
                        progress={"stage": "0:distill", "step": 3, "total": 10, "loss": 0.5},
                        failure_code="invalid_data", failure_message="bad row")
    with session_scope(settings.sqlalchemy_url) as s:
        s.add(StageRun(job_id=job_id, index=0, kind="distill", status="passed", started_at=start,
                       finished_at=start + timedelta(seconds=90)))
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["current_stage"] == "0:distill"
    assert job["progress"] == {"stage": "0:distill", "step": 3, "total": 10, "loss": 0.5}
    assert job["failure"] == {"code": "invalid_data", "message": "bad row"}
    assert job["stages"][0]["duration_s"] == 90.0 and job["started_at"].startswith("2025-01-01T12:00:00")


def test_another_owner_gets_404(client, other_client, settings):
    job_id = insert_job(settings, status="succeeded", report=MINIMAL_REPORT)
    for method, path in (("GET", ""), ("POST", "/cancel"), ("GET", "/report"), ("GET", "/events")):
        r = other_client.request(method, f"/v1/jobs/{job_id}{path}")
        assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json"), path
        assert client.request(method, f"/v1/jobs/{job_id}{path}").status_code in (200, 409), path
    r = other_client.get(f"/v1/jobs/{job_id}/events", headers={"Accept": "text/event-stream"})
    assert r.status_code == 404 and r.json()["request_id"]
    assert other_client.get("/v1/jobs").json()["data"] == []
    assert client.get(f"/v1/jobs/{job_id}", headers={"Authorization": ""}).status_code == 401


def test_openapi_documents_jobs(client):
    spec = client.get("/openapi.json").json()
    for path in ("/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel", "/v1/jobs/{job_id}/report",
                 "/v1/jobs/{job_id}/events"):
        assert path in spec["paths"], path
    assert spec["components"]["schemas"]["JobCreate"]["examples"][0]["stages"]
    assert spec["components"]["schemas"]["JobOut"]["examples"][0]["links"]
    events = spec["paths"]["/v1/jobs/{job_id}/events"]["get"]["responses"]["200"]["content"]
    assert "text/event-stream" in events
    assert "application/problem+json" in spec["paths"]["/v1/jobs"]["post"]["responses"]["422"]["content"]
