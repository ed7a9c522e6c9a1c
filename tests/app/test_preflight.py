"""The submit-time memory check: a recipe whose estimated peak exceeds a worker's memory is a 422 naming the
stage that peaks, with the estimate and the budget; one that fits is queued."""

from __future__ import annotations

import httpx

from app.api.main import create_app
from tests.app.assets_helpers import assert_problem
from tests.app.conftest import Server
from tests.app.test_jobs_api import body, count_jobs, reg  # noqa: F401  (reg: a fixture)


def test_a_recipe_too_large_for_the_workers_is_refused_at_submit(settings, api_key, reg):  # noqa: F811
    small_workers = settings.model_copy(update={"worker_memory_gb": 0.002})  # 2 MB: less than any job needs
    headers = {"Authorization": f"Bearer {api_key}"}
    with Server(create_app(small_workers)) as srv:
        refused = httpx.post(f"{srv.url}/v1/jobs", json=body(reg), headers=headers, timeout=60)
    problem = assert_problem(refused, 422)
    error = problem["errors"][0]
    assert error["code"] == "insufficient_memory" and error["field"] == "stages.0", error
    assert error["estimate_bytes"] > error["budget_bytes"] == int(0.002 * 1024**3)
    assert "batch_size" in error["message"] and "stage 0 (distill)" in error["message"]
    assert count_jobs(settings) == 0

    roomy = settings.model_copy(update={"worker_memory_gb": 64})
    with Server(create_app(roomy)) as srv:
        queued = httpx.post(f"{srv.url}/v1/jobs", json=body(reg), headers=headers, timeout=60)
    assert queued.status_code == 201, queued.text


def test_an_unconfigured_gpu_queue_is_not_checked(settings):
    assert settings.model_copy(update={"gpu_memory_gb": None}).memory_budget("gpu") is None
    assert settings.model_copy(update={"gpu_memory_gb": 80}).memory_budget("gpu") == 80 * 1024**3
    assert settings.memory_budget("cpu") > 0  # unset: this host's physical memory
