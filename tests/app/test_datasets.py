"""/v1/datasets over real HTTP: JSONL and CSV uploads, validation errors with their line, the cap,
pagination and ownership."""

from __future__ import annotations

import hashlib
import json

import httpx

from tests.app.assets_helpers import assert_problem, chunked_multipart, leftovers, walk_pages

JSONL = "".join(json.dumps({"text": f"the quick team number {i}", "label": ["sport", "food"][i % 2]}) + "\n"
                for i in range(12)).encode()
CSV = b"text_a,text_b,score\nthe chef cooks,a cook bakes,0.8\nthe goal,the server,0.1\n\"a, quoted\",b,1\n"


def upload(client: httpx.Client, filename: str, content: bytes, **data: str) -> httpx.Response:
    return client.post("/v1/datasets", files={"file": (filename, content, "application/octet-stream")}, data=data)


def test_upload_jsonl(client, settings):
    r = upload(client, "topics.jsonl", JSONL, name="topics")
    assert r.status_code == 201, r.text
    body = r.json()
    assert r.headers["location"] == f"/v1/datasets/{body['id']}"
    assert body["id"].startswith("ds_")
    assert {k: body[k] for k in ("name", "kind", "rows", "columns", "size_bytes", "sha256")} == {
        "name": "topics", "kind": "classification", "rows": 12, "columns": ["text", "label"],
        "size_bytes": len(JSONL), "sha256": hashlib.sha256(JSONL).hexdigest()}
    assert client.get(r.headers["location"]).json() == body
    stored = settings.uploads_dir / "datasets" / body["id"] / "topics.jsonl"
    assert stored.read_bytes() == JSONL
    assert leftovers(settings.uploads_dir / ".staging") == []


def test_upload_csv(client):
    r = upload(client, "C:\\Users\\me\\pairs file.CSV", CSV)
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["name"], body["kind"], body["rows"]) == ("pairs file.CSV", "similarity", 3)
    assert body["columns"] == ["text_a", "text_b", "score"]


def test_bad_files_name_the_line_and_leave_nothing(client, settings):
    broken = JSONL + b'{"text": "fine", "label": 1}\n{"text": "unterminated\n'
    body = assert_problem(upload(client, "broken.jsonl", broken), 422)
    assert body["detail"].startswith("broken.jsonl:14: not valid JSON"), body
    assert body["errors"] == [{"field": "file", "message": body["detail"], "code": "invalid_data"}]
    cases = {
        ("missing.jsonl", b'{"text": "a", "label": "x"}\n{"text": "b"}\n'): "missing.jsonl:2: missing label",
        ("short.csv", b"text,label\nhello,1\nonly-one\n"): "short.csv:3: fewer fields",
        ("empty.jsonl", b"\n\n"): "empty.jsonl: the file has no rows",
        ("latin1.csv", b"text\ncaf\xe9\n"): "latin1.csv: not UTF-8",
    }
    for (name, content), detail in cases.items():
        assert assert_problem(upload(client, name, content), 422)["detail"].startswith(detail)
    body = assert_problem(upload(client, "data.parquet", b"PAR1"), 422)
    assert body["errors"][0]["field"] == "file"
    body = assert_problem(client.post("/v1/datasets", data={"name": "no file"},
                                      files={"other": ("x.txt", b"x")}), 422)
    body = assert_problem(client.post("/v1/datasets", files={"name": (None, b"only a field")}), 422)
    assert body["errors"][0]["field"] == "file"
    assert_problem(client.post("/v1/datasets", json={"file": "x"}), 415)
    assert_problem(client.post("/v1/datasets", content=b"--x\r\njunk", headers={
        "content-type": "multipart/form-data; boundary=x"}), 400)
    assert leftovers(settings.uploads_dir) == []
    assert client.get("/v1/datasets").json()["data"] == []


def test_dataset_over_the_cap_is_413(client, settings):
    too_big = settings.max_upload_bytes + 512 * 1024
    assert_problem(upload(client, "big.jsonl", b"x" * too_big), 413)
    stream, headers = chunked_multipart("file", "big.jsonl", too_big)
    assert_problem(client.post("/v1/datasets", content=stream, headers=headers), 413)
    assert leftovers(settings.uploads_dir) == []


def test_pagination_and_ownership(client, other_client, server):
    made = [upload(client, f"d{i}.jsonl", JSONL).json()["id"] for i in range(5)]
    ids, flags = walk_pages(client, "/v1/datasets", limit=2)
    assert ids == sorted(made) and flags == [True, True, False]
    assert_problem(client.get("/v1/datasets", params={"after": "bm90LWFuLWlk"}), 400)  # base64 of "not-an-id"
    assert_problem(other_client.get(f"/v1/datasets/{made[0]}"), 404)
    assert other_client.get("/v1/datasets").json() == {"data": [], "has_more": False, "next_cursor": None}
    assert_problem(httpx.get(f"{server.url}/v1/datasets/{made[0]}"), 401)
    assert_problem(httpx.post(f"{server.url}/v1/datasets", files={"file": ("a.jsonl", JSONL)}), 401)
