"""Store backends are registered, not branched on: a backend registered by a test alone is chosen by
DISTILLERY_STORE, serves the API over real HTTP, and goes through materialise, checkpoints and gc with no
`isinstance` check anywhere deciding how."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from app.db.migrate import upgrade
from app.gc import run_gc
from app.settings import Settings
from app.storage import LocalStore
from app.store import get_store, materialise, register_store_backend, unregister_store_backend
from tests import fixtures
from tests.app.conftest import Server, make_key
from tests.databases import temporary_database
from worker import checkpoints


class MirrorStore(LocalStore):
    """A store in a directory no machine treats as its own data_dir (a shared mount, say): every machine
    fetches copies, as with a bucket."""

    def local_path(self, key: str) -> Path | None:
        return None


@pytest.fixture
def mirror(tmp_path):
    register_store_backend("mirror", lambda settings: MirrorStore(settings.data_dir.parent / "bucket"))
    yield tmp_path / "bucket"
    unregister_store_backend("mirror")


def test_an_unknown_backend_is_refused_naming_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="unknown store backend 'mirror'; known: local, s3"):
        Settings(data_dir=tmp_path / "d", store="mirror")


def test_a_registered_backend_serves_uploads_checkpoints_and_gc(mirror, tmp_path):
    with temporary_database("sqlite", tmp_path) as url:
        settings = Settings(data_dir=tmp_path / "api", database_url=url, store="mirror")
        upgrade(settings.sqlalchemy_url)
        from app.api.main import create_app

        data = fixtures.make_data(tmp_path / "src")
        with Server(create_app(settings)) as srv, httpx.Client(
                base_url=srv.url, headers={"Authorization": f"Bearer {make_key(settings, 'team-a')}"}) as client:
            r = client.post("/v1/datasets", files={"file": ("train.jsonl", data["train"].read_bytes())})
            assert r.status_code == 201, r.text
            key = f"uploads/datasets/{r.json()['id']}/train.jsonl"
        assert (mirror / key).read_bytes() == data["train"].read_bytes()  # the upload went to the backend

        store = get_store(settings)
        other = tmp_path / "worker"  # another machine's data_dir: materialise fetches a copy
        assert materialise(store, other, key).read_bytes() == data["train"].read_bytes()

        stage = other / "jobs" / "job_1" / "stages" / "00-distill"
        (stage / "artifact").mkdir(parents=True)
        (stage / "artifact" / "model.safetensors").write_bytes(b"weights")
        (stage / "stage.json").write_text('{"index": 0}')
        checkpoints.push(store, other, stage)
        assert (mirror / "jobs/job_1/stages/00-distill/stage.json").is_file()
        third = tmp_path / "third"
        checkpoints.fetch(store, third, third / "jobs" / "job_1")
        assert (third / "jobs/job_1/stages/00-distill/artifact/model.safetensors").read_bytes() == b"weights"

        removed = run_gc(settings, older_than_days=0.0001)
        assert removed.multipart == []  # this backend has no partial uploads to abort
