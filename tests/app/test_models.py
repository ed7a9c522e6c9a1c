"""/v1/models over real HTTP: references, archive uploads, the size cap, pagination and ownership."""

from __future__ import annotations

import hashlib
import os
import shutil

import httpx

from tests.app.assets_helpers import assert_problem, chunked_multipart, leftovers, tar_gz, tar_with_entry, walk_pages

REV = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"


def hub(name: str = "hub", revision: str = REV) -> dict:
    return {"name": name, "source": {"source": "hf", "id": "org/tiny", "revision": revision}}


def test_register_local_model(client, model_dir):
    r = client.post("/v1/models", json={"name": "tiny", "source": {"source": "local", "path": str(model_dir)}})
    assert r.status_code == 201, r.text
    body = r.json()
    assert r.headers["location"] == f"/v1/models/{body['id']}"
    assert body["id"].startswith("mdl_") and body["name"] == "tiny"
    assert body["source"] == {"source": "local", "path": os.path.realpath(model_dir)}
    assert body["size_bytes"] == sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())
    assert len(body["sha256"]) == 64
    again = client.get(r.headers["location"])
    assert again.status_code == 200 and again.json() == body


def test_local_references_outside_the_roots_are_refused(client, settings, model_dir, tiny_bert):
    root = settings.model_roots[0]
    (root / "escape").symlink_to(tiny_bert, target_is_directory=True)  # a link out of the root
    leaky = root / "leaky"
    shutil.copytree(model_dir, leaky)
    (leaky / "vocab.txt").unlink()
    (leaky / "vocab.txt").symlink_to(tiny_bert / "vocab.txt")  # a link out from inside an allowed directory
    coded = root / "coded"
    shutil.copytree(model_dir, coded)
    (coded / "modeling_evil.py").write_text("import os\n")
    cases = {str(tiny_bert): "outside the allowed roots", str(root / "escape"): "outside the allowed roots",
             str(leaky): "outside the allowed roots", str(coded): "Python files",
             "models/tiny-bert": "absolute", str(root / "missing"): "not a directory", str(root): "config.json"}
    for path, reason in cases.items():
        r = client.post("/v1/models", json={"name": "x", "source": {"source": "local", "path": path}})
        body = assert_problem(r, 422)
        assert body["errors"][0]["field"] == "source.path", body
        assert reason in body["detail"], (path, body)
    assert client.get("/v1/models").json()["data"] == []


def test_hub_references(client):
    r = client.post("/v1/models", json=hub())
    assert r.status_code == 201, r.text
    assert r.json()["source"] == hub()["source"] and r.json()["size_bytes"] is None
    for bad, field in [(hub(revision="main"), "source.revision"), ({"name": "x"}, "source"),
                       ({"name": "", "source": hub()["source"]}, "name"),
                       ({"name": "x", "source": {"source": "archive", "path": "/tmp/a.tar"}}, "source")]:
        body = assert_problem(client.post("/v1/models", json=bad), 422)
        assert body["errors"][0]["field"] == field, body
    assert_problem(client.post("/v1/models", content=b"{not json", headers={"content-type": "application/json"}),
                   400)
    assert_problem(client.post("/v1/models", content=b"x", headers={"content-type": "text/plain"}), 415)


def test_bundled_reference(client):
    r = client.post("/v1/models", json={"name": "minilm", "source": {"source": "bundled"}})
    assert r.status_code == 201, r.text
    assert r.json()["source"] == {"source": "bundled", "name": "all-MiniLM-L6-v2"}
    assert r.json()["size_bytes"] > 1_000_000


def test_upload_archive(client, settings, tiny_bert):
    archive = tar_gz(tiny_bert)
    r = client.post("/v1/models", files={"archive": ("tiny-bert.tar.gz", archive, "application/gzip")},
                    data={"name": "uploaded"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == "uploaded"
    assert body["size_bytes"] == len(archive) and body["sha256"] == hashlib.sha256(archive).hexdigest()
    unpacked = settings.uploads_dir / "models" / body["id"]
    assert body["source"] == {"source": "store", "prefix": f"uploads/models/{body['id']}/"}
    assert (unpacked / "config.json").is_file() and (unpacked / "model.safetensors").is_file()
    assert leftovers(settings.uploads_dir / ".staging") == []  # the archive itself is not kept


def test_unsafe_archives_leave_nothing(client, settings, tiny_bert):
    for name, blob in [("evil.tar", tar_with_entry("../evil.txt")), ("abs.tar", tar_with_entry("/tmp/abs.txt")),
                       ("nomodel.tar", tar_with_entry("readme.txt")), ("junk.zip", b"not an archive")]:
        r = client.post("/v1/models", files={"archive": (name, blob)})
        body = assert_problem(r, 422)
        assert body["errors"][0]["field"] == "archive", body
    body = assert_problem(client.post("/v1/models", files={"archive": ("model.exe", b"MZ")}), 422)
    assert body["errors"][0]["field"] == "archive" and ".tar.gz" in body["detail"]
    assert leftovers(settings.uploads_dir) == []
    assert not (settings.uploads_dir / "evil.txt").exists() and not (settings.data_dir / "evil.txt").exists()


def test_archive_over_the_cap_is_413_and_leaves_nothing(client, settings):
    big = os.urandom(settings.max_upload_bytes + 1024 * 1024)
    # With a Content-Length: refused before the body is read.
    body = assert_problem(client.post("/v1/models", files={"archive": ("big.tar", big)}), 413)
    assert str(settings.max_upload_bytes) in body["detail"]
    # Chunked, with no Content-Length: the running count stops it part-way.
    stream, headers = chunked_multipart("archive", "big.tar", settings.max_upload_bytes + 1024 * 1024)
    assert_problem(client.post("/v1/models", content=stream, headers=headers), 413)
    assert leftovers(settings.uploads_dir) == []
    # The connection and the service are still fine afterwards.
    assert client.get("/v1/models").status_code == 200


def test_pagination_walks_every_model_once(client):
    made = [client.post("/v1/models", json=hub(f"m{i}")).json()["id"] for i in range(5)]
    ids, flags = walk_pages(client, "/v1/models", limit=2)
    assert ids == sorted(made) and flags == [True, True, False]
    assert client.get("/v1/models", params={"limit": 5}).json()["has_more"] is False
    assert_problem(client.get("/v1/models", params={"after": "!!not-a-cursor"}), 400)
    assert_problem(client.get("/v1/models", params={"limit": 0}), 422)
    assert_problem(client.get("/v1/models", params={"limit": 201}), 422)


def test_another_owner_sees_nothing(client, other_client, server):
    mine = client.post("/v1/models", json=hub()).json()["id"]
    assert_problem(other_client.get(f"/v1/models/{mine}"), 404)
    assert other_client.get("/v1/models").json() == {"data": [], "has_more": False, "next_cursor": None}
    assert_problem(client.get("/v1/models/mdl_nonexistent"), 404)
    for anonymous in (httpx.get(f"{server.url}/v1/models"),
                      httpx.post(f"{server.url}/v1/models", json=hub()),
                      httpx.get(f"{server.url}/v1/models/{mine}", headers={"Authorization": "Bearer dk_wrong"})):
        assert_problem(anonymous, 401)
