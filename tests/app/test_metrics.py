"""/metrics: jobs by state, stage durations (a histogram the database counts), queue depth and request latency
labelled with the full route template. Stage runs are inserted directly, with known durations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families

from app.api.metrics import STAGE_BUCKETS, stage_durations
from app.db.base import new_id, session_scope
from app.db.models import Job, StageRun

START = datetime(2025, 1, 1, 12, tzinfo=UTC)
DISTILL_S = [0.5, 3.0, 3.0, 70.0, 4000.0]


def _insert(settings) -> str:
    with session_scope(settings.sqlalchemy_url) as s:
        for i, seconds in enumerate(DISTILL_S):
            job = Job(id=new_id("job"), owner="team-a", status="succeeded", queue="cpu", request={}, recipe={})
            s.add(job)
            s.flush()
            s.add(StageRun(job_id=job.id, index=0, kind="distill", status="passed", started_at=START,
                           finished_at=START + timedelta(seconds=seconds)))
            if i == 0:
                s.add(StageRun(job_id=job.id, index=1, kind="quantize", status="passed", started_at=START,
                               finished_at=START + timedelta(seconds=2)))
        running = Job(id=new_id("job"), owner="team-a", status="running", queue="gpu", request={}, recipe={})
        s.add(running)
        s.flush()
        # unfinished: not a duration yet
        s.add(StageRun(job_id=running.id, index=0, kind="distill", status="running", started_at=START))
    return running.id


def _cumulative(values: list[float]) -> list[int]:
    return [sum(v <= le for v in values) for le in STAGE_BUCKETS]


def test_stage_durations_are_aggregated_by_the_database(settings):
    _insert(settings)
    with session_scope(settings.sqlalchemy_url) as s:
        rows = stage_durations(s)
    assert [(kind, n) for kind, n, _, _ in rows] == [("distill", 5), ("quantize", 1)]
    (_, _, total, buckets), (_, _, q_total, q_buckets) = rows
    assert abs(total - sum(DISTILL_S)) < 1e-3 and abs(q_total - 2.0) < 1e-3
    assert buckets == _cumulative(DISTILL_S) and q_buckets == _cumulative([2.0])
    assert buckets[:2] == [1, 3]  # 0.5 s under 1 s; 3 s twice under 5 s


def test_metrics_families(client, server, settings):
    running = _insert(settings)
    redis.Redis.from_url(settings.redis_url).rpush("gpu", b"m1", b"m2")  # two messages waiting
    assert client.get(f"/v1/jobs/{running}").status_code == 200
    assert client.get("/v1/jobs/job_missing").status_code == 404

    text = httpx.get(f"{server.url}/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    jobs = {s.labels["state"]: s.value for s in families["distillery_jobs"].samples}
    assert jobs["succeeded"] == 5 and jobs["running"] == 1 and jobs["queued"] == 0 and jobs["failed"] == 0

    stages = families["distillery_stage_duration_seconds"]
    assert stages.type == "histogram"
    by_name = {(s.name, s.labels["kind"], s.labels.get("le")): s.value for s in stages.samples}
    assert by_name[("distillery_stage_duration_seconds_count", "distill", None)] == 5
    assert abs(by_name[("distillery_stage_duration_seconds_sum", "distill", None)] - sum(DISTILL_S)) < 1e-3
    assert by_name[("distillery_stage_duration_seconds_bucket", "distill", "60.0")] == 3
    assert by_name[("distillery_stage_duration_seconds_bucket", "distill", "+Inf")] == 5
    assert by_name[("distillery_stage_duration_seconds_count", "quantize", None)] == 1

    depth = {s.labels["queue"]: s.value for s in families["distillery_queue_depth"].samples}
    assert depth == {"cpu": 0, "gpu": 2}

    latency = families["distillery_http_request_duration_seconds"]
    counts = {(s.labels["method"], s.labels["route"], s.labels["status"]): s.value for s in latency.samples
              if s.name.endswith("_count")}
    # the full template, whatever the id: one series per route, not per job
    assert counts[("GET", "/v1/jobs/{job_id}", "200")] >= 1 and counts[("GET", "/v1/jobs/{job_id}", "404")] >= 1
    assert not [route for (_, route, _) in counts if route.startswith("/jobs") or "job_missing" in route]
