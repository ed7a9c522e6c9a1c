"""Service fixtures: a migrated database (SQLite and PostgreSQL), real Redis, and the API served by a
real uvicorn on a loopback port, called over real HTTP."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from app.db.base import session_scope
from app.db.migrate import upgrade
from app.settings import Settings
from tests.databases import require_postgres, temporary_database

REDIS_URL = "redis://127.0.0.1:6379/9"  # a database of its own, flushed per test


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path) -> Iterator[str]:
    if request.param == "postgres":
        require_postgres()
    with temporary_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def settings(database_url, tmp_path) -> Settings:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    s = Settings(data_dir=tmp_path / "data", database_url=database_url, redis_url=REDIS_URL,
                 model_roots=[tmp_path / "models"], max_upload_bytes=2 * 1024 * 1024)
    (tmp_path / "models").mkdir()
    upgrade(s.sqlalchemy_url)
    return s


def worker_settings(database_url: str, tmp_path: Path, redis_url: str) -> Settings:
    """Settings for a test that runs a real worker on its own Redis database (flushed here): a short lease and a
    model root under tmp_path, the database migrated."""
    redis.Redis.from_url(redis_url).flushdb()
    s = Settings(data_dir=tmp_path / "data", database_url=database_url, redis_url=redis_url,
                 model_roots=[tmp_path / "models"], lease_seconds=5)
    (tmp_path / "models").mkdir()
    upgrade(s.sqlalchemy_url)
    return s


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """uvicorn in a thread, on its own port: real HTTP, real streaming."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def server(settings) -> Iterator[Server]:
    from app.api.main import create_app

    with Server(create_app(settings)) as srv:
        yield srv


def make_key(settings: Settings, owner: str) -> str:
    from app.auth import create_key

    with session_scope(settings.sqlalchemy_url) as session:
        _, secret = create_key(session, owner, name="test")
    return secret


@pytest.fixture
def api_key(settings) -> str:
    return make_key(settings, "team-a")


@pytest.fixture
def other_key(settings) -> str:
    return make_key(settings, "team-b")


@pytest.fixture
def client(server, api_key) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60) as c:
        yield c


@pytest.fixture
def other_client(server, other_key) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {other_key}"}, timeout=60) as c:
        yield c


@pytest.fixture
def model_dir(tmp_path, tiny_bert) -> Path:
    """A tiny teacher placed under the allowed model root."""
    import shutil

    target = tmp_path / "models" / "tiny-bert"
    shutil.copytree(tiny_bert, target)
    return target
