"""Tenant isolation, swept over every endpoint in the OpenAPI document: a second key sees 404 for each of the
first key's objects (on every method and sub-resource), finds none of them in any list or event stream, and
cannot use them in its own job. An endpoint added later is covered automatically, and a path parameter this
sweep does not know fails the test, so nothing new slips through unchecked."""

from __future__ import annotations

import re

import pytest

from tests.app.assets_helpers import MINIMAL_REPORT, assert_problem
from tests.app.test_artifacts import make_job
from tests.app.test_events import add_events
from tests.app.test_jobs_api import body, reg, set_job  # noqa: F401  (reg: a fixture)

PUBLIC = {"/healthz", "/readyz", "/metrics"}  # no owner's objects behind them


@pytest.fixture
def owned(client, settings, reg) -> dict[str, str]:  # noqa: F811
    """One of everything, owned by team-a: a model, a dataset, a submitted job with events, and an artifact."""
    job = client.post("/v1/jobs", json=body(reg))
    assert job.status_code == 201, job.text
    add_events(settings, job.json()["id"], range(1, 4))
    set_job(settings, job.json()["id"], status="succeeded", report=MINIMAL_REPORT)
    _, artifacts = make_job(settings, files={"model.tar": b"weights"})
    return {"model_id": reg["model"], "dataset_id": reg["train"], "job_id": job.json()["id"],
            "artifact_id": artifacts[0]}


def operations(client) -> list[tuple[str, str]]:
    schema = client.get("/openapi.json").json()
    return [(method.upper(), path) for path, ops in schema["paths"].items() for method in ops
            if method in ("get", "head", "post", "put", "patch", "delete") and path not in PUBLIC]


def fill(path: str, ids: dict[str, str]) -> str:
    names = re.findall(r"{(\w+)}", path)
    unknown = [n for n in names if n not in ids]
    assert not unknown, f"{path}: the tenancy sweep does not know the parameter(s) {unknown}; add them to `owned`"
    return path.format(**{n: ids[n] for n in names})


def test_every_endpoint_hides_one_owners_objects_from_another(client, other_client, owned):
    checked = []
    for method, path in operations(client):
        url = fill(path, owned)
        if "{" in path:
            mine = client.request(method, url)
            assert mine.status_code != 404, (method, url, mine.text)  # the id is real (cancel answers 409)
            theirs = other_client.request(method, url)
            assert theirs.status_code == 404, (method, url, theirs.status_code)
            if method != "HEAD":
                assert_problem(theirs, 404)
                # a 404 may repeat the id the caller sent; it names none of the owner's other objects
                assert not [v for v in owned.values() if v in theirs.text and v not in url], theirs.text
            checked.append(f"{method} {path}")
        elif method == "GET":  # a list, or an owner-wide stream: nothing of team-a's in it
            theirs = other_client.get(url)
            assert theirs.status_code == 200, (url, theirs.text)
            assert not any(v in theirs.text for v in owned.values()), (url, theirs.text[:500])
            checked.append(f"GET {path}")
    assert {"GET /v1/jobs/{job_id}", "POST /v1/jobs/{job_id}/cancel", "GET /v1/artifacts/{artifact_id}/download",
            "GET /v1/jobs", "GET /v1/models", "GET /v1/datasets"} <= set(checked), checked


def test_another_owner_cannot_use_my_objects_in_a_job(other_client, reg):  # noqa: F811
    theirs = other_client.post("/v1/jobs", json=body(reg))  # team-a's teacher and data
    assert theirs.status_code == 422 and theirs.json()["errors"][0]["field"] == "teacher.model", theirs.text
    own_teacher = body(reg, teacher={"model": reg["other_model"]})  # team-b's teacher, team-a's data
    theirs = other_client.post("/v1/jobs", json=own_teacher)
    assert theirs.status_code == 422 and theirs.json()["errors"][0]["field"].startswith("data."), theirs.text


def test_event_streams_do_not_cross_owners(client, other_client, owned):
    headers = {"Accept": "text/event-stream"}
    mine = client.get(f"/v1/jobs/{owned['job_id']}/events", headers=headers)  # a finished job: the stream ends
    assert mine.status_code == 200 and "id: 3" in mine.text
    theirs = other_client.get(f"/v1/jobs/{owned['job_id']}/events", headers=headers)
    assert_problem(theirs, 404)
