"""A registered local model folder stays as safe as its registration, over real HTTP and a real worker.

The outside probe registered a folder, swapped one of its files for a link to a file outside every root, and got
that file's content back in model.tar. Here: links, hard links and Python files in sub-folders are refused at
registration; a swap before the first submit is a 422 naming the file; after it, jobs load the copy verified at
the first submit, and a worker that has to make the copy itself fails the job naming the file. The outside
file's content is in no artifact."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import time
from pathlib import Path

import httpx
import pytest

from app.settings import Settings
from tests.app.conftest import worker_settings
from tests.worker.conftest import FAST_EVAL, QUANTIZE, WorkerProc
from worker.engine.references import SNAPSHOTS

from .assets_helpers import assert_problem
from .test_jobs_api import body, reg  # noqa: F401  (reg: team-a's datasets)

REDIS_URL = "redis://127.0.0.1:6379/6"  # its own: a worker consumes here, and no other test flushes it
SECRET = b"zz-outside-secret-zz"
CHANGED = "model files changed since registration"


@pytest.fixture
def settings(database_url, tmp_path) -> Settings:
    return worker_settings(database_url, tmp_path, REDIS_URL)


@pytest.fixture
def outside(tmp_path, tiny_bert) -> Path:
    """A valid config outside every root, marked so that its content shows wherever it lands (a load that
    followed the link would save it into model.tar)."""
    path = tmp_path / "outside" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps({**json.loads((tiny_bert / "config.json").read_text()),
                                "outside_note": SECRET.decode()}))
    return path


def folder(settings: Settings, tiny_bert: Path, name: str, note: str = "") -> Path:
    """A copy of tiny BERT under the root; `note` changes config.json, and with it the folder's digest."""
    path = settings.model_roots[0] / name
    shutil.copytree(tiny_bert, path)
    if note:
        cfg = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**cfg, "distillery_test_note": note}))
    return path


def register(client: httpx.Client, path: Path) -> dict:
    r = client.post("/v1/models", json={"name": path.name, "source": {"source": "local", "path": str(path)}})
    assert r.status_code == 201, r.text
    return r.json()


def swap_for_link(path: Path, target: Path) -> None:
    path.unlink()
    path.symlink_to(target)


def test_registration_refuses_links_hard_links_and_python_in_sub_folders(client, settings, tiny_bert, tmp_path):
    root = settings.model_roots[0]
    (root / "shared").mkdir()
    (root / "shared" / "config.json").write_text("{}")
    cases = {
        "file-link": ("model file extra.json is a symbolic link", lambda m: (m / "extra.json").symlink_to(
            m / "config.json")),  # even to a file of the same folder
        "dir-link": ("model file 1_Pooling is a symbolic link", lambda m: (m / "1_Pooling").symlink_to(
            root / "shared", target_is_directory=True)),  # a folder inside the root
        "hard-link": ("model file vocab.txt has 2 hard links", lambda m: os.link(m / "vocab.txt",
                                                                               tmp_path / "kept-name.txt")),
        "nested-python": ("contains Python files (sub/helper.py)", lambda m: (
            (m / "sub").mkdir(), (m / "sub" / "helper.py").write_text("import os\n"))),
    }
    for name, (reason, spoil) in cases.items():
        path = folder(settings, tiny_bert, name)
        spoil(path)
        r = client.post("/v1/models", json={"name": name, "source": {"source": "local", "path": str(path)}})
        problem = assert_problem(r, 422)
        assert problem["errors"][0]["field"] == "source.path", problem
        assert reason in problem["detail"], (name, problem)
        assert str(settings.data_dir) not in r.text
    assert client.get("/v1/models").json()["data"] == []


def test_a_path_the_os_cannot_take_is_a_422(client, settings):
    root = settings.model_roots[0]
    for path, reason in ((f"{root}/a\u0000b", "contains a NUL byte"), (f"{root}/{'a' * 5000}", "at most 4096"),
                         (f"{root}/{'a' * 300}", "longer than 255 bytes")):
        problem = assert_problem(client.post("/v1/models", json={"name": "x", "source": {"source": "local",
                                                                                         "path": path}}), 422)
        assert problem["errors"][0]["field"] == "source.path" and reason in problem["detail"], problem


def test_a_file_swapped_for_a_link_before_the_submit_is_a_422_naming_it(client, settings, tiny_bert, reg,  # noqa: F811
                                                                        outside):
    model = register(client, folder(settings, tiny_bert, "tiny"))
    swap_for_link(settings.model_roots[0] / "tiny" / "config.json", outside)
    r = client.post("/v1/jobs", json=body(reg, teacher={"model": model["id"]}, stages=[QUANTIZE]))
    problem = assert_problem(r, 422)
    assert problem["errors"][0]["field"] == "teacher", problem
    assert problem["detail"].startswith(f"teacher: {CHANGED}: model file config.json is a symbolic link"), problem
    assert str(settings.data_dir) not in r.text
    assert client.get("/v1/jobs").json()["data"] == []


def wait(client: httpx.Client, job_id: str, worker: WorkerProc) -> dict:
    deadline = time.time() + 180
    while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] not in ("succeeded", "failed", "cancelled"):
        assert time.time() < deadline, f"still {job['status']}:\n{worker.text()[-3000:]}"
        time.sleep(0.1)
    return job


def artifact_files(client: httpx.Client, job_id: str) -> dict[str, bytes]:
    """Every file of every artifact of the job, tar members one by one, as downloaded."""
    files: dict[str, bytes] = {}
    for art in client.get(f"/v1/jobs/{job_id}/artifacts", params={"limit": 100}).json()["data"]:
        raw = client.get(art["download_url"]).content
        if art["name"].endswith(".tar"):
            with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
                for member in tar.getmembers():
                    if member.isfile():
                        files[f"{art['name']}:{member.name}"] = tar.extractfile(member).read()
        else:
            files[art["name"]] = raw
    return files


def test_a_swap_after_the_submit_never_reaches_an_artifact(client, settings, tiny_bert, reg, outside):  # noqa: F811
    kept = register(client, folder(settings, tiny_bert, "kept"))
    redone = register(client, folder(settings, tiny_bert, "redone", note="another digest"))
    jobs = {}
    for name, model in (("kept", kept), ("redone", redone)):
        r = client.post("/v1/jobs", json=body(reg, teacher={"model": model["id"]}, stages=[QUANTIZE],
                                              evaluate=FAST_EVAL, max_length=32))
        assert r.status_code == 201, r.text
        jobs[name] = r.json()["id"]
    # Queued, no worker yet. Both folders change; the copy the submit verified stays for "kept", while "redone"
    # stands for a worker host whose data dir lacks the copy: it must make it from the folder as it is now.
    for name in jobs:
        swap_for_link(settings.model_roots[0] / name / "config.json", outside)
    shutil.rmtree(settings.data_dir / SNAPSHOTS / redone["sha256"])
    worker = WorkerProc(settings, "cpu")
    try:
        done = {name: wait(client, job_id, worker) for name, job_id in jobs.items()}
    finally:
        worker.stop()

    assert done["kept"]["status"] == "succeeded", (done["kept"]["failure"], worker.text()[-3000:])
    files = artifact_files(client, jobs["kept"])
    configs = [json.loads(data) for name, data in files.items() if name.startswith("model.tar:")
               and name.endswith("config.json")]
    assert configs and all("outside_note" not in c for c in configs)  # the registered file, not the link's target
    assert done["redone"]["status"] == "failed"
    assert done["redone"]["failure"]["message"].startswith(
        f"teacher: {CHANGED}: model file config.json is a symbolic link"), done["redone"]["failure"]
    files |= artifact_files(client, jobs["redone"])
    assert not [name for name, data in files.items() if SECRET in data]


def test_gc_removes_the_verified_copy_of_a_folder_no_model_row_names(client, settings, tiny_bert, reg):  # noqa: F811
    from sqlalchemy import delete

    from app.db.base import session_scope
    from app.db.models import ModelRecord
    from app.gc import run_gc

    models = [register(client, folder(settings, tiny_bert, name, note=name)) for name in ("stays", "goes")]
    for model in models:  # the first submit makes each folder's verified copy
        r = client.post("/v1/jobs", json=body(reg, teacher={"model": model["id"]}, stages=[QUANTIZE],
                                              evaluate=FAST_EVAL, max_length=32))
        assert r.status_code == 201, r.text
        assert (settings.data_dir / SNAPSHOTS / model["sha256"]).is_dir()
    with session_scope(settings.sqlalchemy_url) as session:  # as a deletion of the model would
        session.execute(delete(ModelRecord).where(ModelRecord.id == models[1]["id"]))

    assert run_gc(settings, dry_run=True).snapshots == [models[1]["sha256"]]
    assert (settings.data_dir / SNAPSHOTS / models[1]["sha256"]).is_dir()  # a dry run removes nothing
    assert run_gc(settings).snapshots == [models[1]["sha256"]]
    assert not (settings.data_dir / SNAPSHOTS / models[1]["sha256"]).exists()
    assert (settings.data_dir / SNAPSHOTS / models[0]["sha256"]).is_dir()
