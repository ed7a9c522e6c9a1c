"""Hostile values in request fields are a 422 naming the field, on SQLite and PostgreSQL (which refuses a NUL
byte in text: it used to be a 500), and no problem shows where the server keeps its files. Real HTTP."""

from __future__ import annotations

import shutil

from tests.app.assets_helpers import assert_problem, tar_gz
from tests.app.test_jobs_api import body, reg  # noqa: F401  (reg is a fixture)

REV = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"


def register(client, source: dict, name: str = "m"):
    return client.post("/v1/models", json={"name": name, "source": source})


def test_hub_ids_the_hub_refuses_are_refused_at_registration(client):
    for bad in ("a--b/c", "a..b", "x.git", "é/x", "a/b/c", "-a/b", "a" * 97, "a" * 5000, "org/na me"):
        problem = assert_problem(register(client, {"source": "hf", "id": bad, "revision": REV}), 422)
        assert problem["errors"][0]["field"] == "source.id", (bad, problem)
        assert len(problem["detail"]) < 600, problem  # the id is not echoed 5,000 characters long
    for bad in ("main", "C9745ED1D9F207416BE6D2E6F8DE32D1F16199BF", "a" * 5000):
        problem = assert_problem(register(client, {"source": "hf", "id": "org/model", "revision": bad}), 422)
        assert problem["errors"][0]["field"] == "source.revision"
    assert register(client, {"source": "hf", "id": "sentence-transformers/all-MiniLM-L6-v2", "revision": REV}
                    ).status_code == 201
    assert len(client.get("/v1/models").json()["data"]) == 1  # nothing else was stored


def test_nul_bytes_and_over_long_strings_name_their_field(client, settings):
    root = settings.model_roots[0]
    cases = [
        ({"name": "x\u0000y", "source": {"source": "bundled"}}, "name"),
        ({"name": "m", "source": {"source": "local", "path": f"{root}/a\u0000b"}}, "source.path"),
        ({"name": "m", "source": {"source": "local", "path": f"{root}/{'a' * 5000}"}}, "source.path"),
        ({"name": "m", "source": {"source": "local", "path": f"{root}/{'a' * 300}/x"}}, "source.path"),
        ({"name": "m", "source": {"source": "hf", "id": "org/m\u0000", "revision": REV}}, "source.id"),
    ]
    for sent, field in cases:
        problem = assert_problem(client.post("/v1/models", json=sent), 422)
        assert problem["errors"][0]["field"] == field, (sent, problem)
    assert client.get("/v1/models").json()["data"] == []


def test_a_body_nested_too_deeply_is_a_400(client):
    deep = "[" * 30_000 + "]" * 30_000  # under the 64 KiB cap on a JSON body
    problem = assert_problem(client.post("/v1/models", content=deep, headers={"content-type": "application/json"}),
                             400)
    assert "nested" in problem["detail"]


def test_job_errors_about_inputs_name_ids_not_server_paths(client, reg, settings, tiny_bert):  # noqa: F811
    """A dataset or an uploaded model gone from the data directory (a disk replaced, a hand-made cleanup) is said
    as the id the client sent, in the field it sent it in."""
    model = client.post("/v1/models", files={"archive": ("m.tar.gz", tar_gz(tiny_bert))})
    assert model.status_code == 201, model.text
    data_dir = str(settings.data_dir)
    shutil.rmtree(settings.uploads_dir / "models" / model.json()["id"])
    problem = assert_problem(client.post("/v1/jobs", json=body(reg, teacher={"model": model.json()["id"]})), 422)
    assert problem["errors"][0]["field"] == "teacher", problem
    assert model.json()["id"] in problem["detail"] and "uploads/" not in problem["detail"], problem

    (settings.uploads_dir / "train.jsonl").unlink()
    problem = assert_problem(client.post("/v1/jobs", json=body(reg)), 422)
    assert problem["errors"][0]["field"] == "data.train", problem
    assert f"dataset {reg['train']}" in problem["detail"], problem
    for text in (problem["detail"], *(e["message"] for e in problem["errors"])):
        assert data_dir not in text and "uploads/" not in text, problem
