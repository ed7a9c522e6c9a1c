"""One real job through the API and a real Celery worker, watched as a client would: GET /v1/jobs/{id} shows the
stage it is in while it runs and where it ended, and /metrics then counts it (jobs by state, stage durations,
queue depth, request latency). On both databases (tests/app/conftest.py's database_url): the whole path of a
job, API and worker, on each."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.settings import Settings
from tests.app.conftest import worker_settings
from tests.worker.conftest import DISTILL, FAST_EVAL, QUANTIZE, WorkerProc

from .test_jobs_api import body, reg  # noqa: F401  (reg: the fixture with team-a's datasets and tiny BERT)

REDIS_URL = "redis://127.0.0.1:6379/15"  # its own: a worker consumes here, and nothing else flushes it


@pytest.fixture
def settings(database_url, tmp_path) -> Settings:
    return worker_settings(database_url, tmp_path, REDIS_URL)


@pytest.fixture
def worker(settings) -> Iterator[WorkerProc]:
    proc = WorkerProc(settings, "cpu")
    yield proc
    proc.stop()


def test_a_job_is_followed_through_current_stage_and_counted_in_metrics(client, server, settings, reg,  # noqa: F811
                                                                         worker):
    r = client.post("/v1/jobs", json=body(reg, stages=[DISTILL, QUANTIZE], evaluate=FAST_EVAL, max_length=32))
    assert r.status_code == 201, r.text
    url = r.headers["location"]
    seen: list[tuple[str, str | None]] = []
    deadline = time.time() + 180
    while True:
        job = client.get(url).json()
        seen.append((job["status"], job["current_stage"]))
        if job["status"] in ("succeeded", "failed", "cancelled"):
            break
        assert time.time() < deadline, f"still {job['status']}:\n{worker.text()[-3000:]}"
        time.sleep(0.05)
    assert job["status"] == "succeeded", (job["failure"], worker.text()[-3000:])

    # The stages in the order the job went through them ("job" for the attempt's start, then "teacher",
    # "0:distill", "1:quantize", "final"; the outcome's "job" event leaves current_stage alone): while it ran,
    # each poll showed one of them, never going back; at the end, the engine's last.
    events = client.get(f"{url}/events", params={"limit": 1000}).json()["data"]
    order = list(dict.fromkeys(e["stage"] for e in events))
    assert order[0] == events[-1]["stage"] == "job" and {"0:distill", "1:quantize"} <= set(order)
    running = [stage for status, stage in seen if status == "running" and stage is not None]
    assert seen[0] == ("queued", None) and running, seen
    positions = [order.index(stage) for stage in running]
    assert positions == sorted(positions), seen
    assert job["current_stage"] == order[-1] == [e["stage"] for e in events if e["stage"] != "job"][-1]
    assert job["progress"]["stage"] == job["current_stage"]
    assert [(s["kind"], s["status"]) for s in job["stages"]] == [("distill", "passed"), ("quantize", "passed")]

    text = httpx.get(f"{server.url}/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    jobs = {s.labels["state"]: s.value for s in families["distillery_jobs"].samples}
    assert jobs["succeeded"] == 1 and jobs["running"] == jobs["queued"] == 0
    durations = {(s.name.rsplit("_", 1)[-1], s.labels["kind"]): s.value
                 for s in families["distillery_stage_duration_seconds"].samples if "le" not in s.labels}
    assert durations[("count", "distill")] == durations[("count", "quantize")] == 1
    assert abs(durations[("sum", "distill")] - job["stages"][0]["duration_s"]) < 0.01
    assert {s.labels["queue"]: s.value for s in families["distillery_queue_depth"].samples} == {"cpu": 0, "gpu": 0}
    polls = [s.value for s in families["distillery_http_request_duration_seconds"].samples
             if s.name.endswith("_count") and s.labels["route"] == "/v1/jobs/{job_id}" and s.labels["status"] == "200"]
    assert polls and polls[0] >= len(seen)
