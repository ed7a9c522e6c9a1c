"""`distillery api` and `distillery worker` on an empty database: the schema is created on start (alembic
upgrade head), and processes that start at once on one fresh PostgreSQL database do not break each other
(the upgrade runs under an advisory lock; without it, two concurrent upgrades fail on duplicate tables)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis
import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from app.db.migrate import alembic_config

from .conftest import REDIS_URL, free_port

ROOT = Path(__file__).resolve().parents[2]


def tables_and_revision(url: str) -> tuple[set[str], str | None]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return set(sa.inspect(conn).get_table_names()), MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head_revision(url: str) -> str:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


class Proc:
    """A `distillery` service command with its own log file, configured only by its environment."""

    def __init__(self, args: list[str], url: str, data_dir: Path, log: Path) -> None:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("DISTILLERY_") and k not in ("DATABASE_URL", "REDIS_URL")}
        env.update({"DATABASE_URL": url, "REDIS_URL": REDIS_URL, "DISTILLERY_DATA_DIR": str(data_dir),
                    "HF_HUB_OFFLINE": "1"})
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env, stdout=out,
                                         stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


def api(url: str, tmp_path: Path, name: str) -> tuple[Proc, str]:
    port = free_port()
    return Proc(["api", "--port", str(port)], url, tmp_path / "data", tmp_path / f"{name}.log"), \
        f"http://127.0.0.1:{port}"


def wait_ready(proc: Proc, base: str, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert proc.proc.poll() is None, f"it exited with {proc.proc.returncode}:\n{proc.text()[-3000:]}"
        assert time.time() < deadline, f"no 200 from {base}/readyz:\n{proc.text()[-3000:]}"
        time.sleep(0.2)


def test_api_on_an_empty_database_creates_the_schema_and_becomes_ready(database_url, tmp_path):
    if database_url.startswith("sqlite"):
        assert not Path(database_url.removeprefix("sqlite:///")).exists()  # not even the file
    else:
        assert tables_and_revision(database_url) == (set(), None)
    proc, base = api(database_url, tmp_path, "api")
    try:
        wait_ready(proc, base)
        tables, revision = tables_and_revision(database_url)
        assert revision == head_revision(database_url)
        assert {"jobs", "stage_runs", "events", "artifacts", "api_keys", "alembic_version"} <= tables
        # the schema serves requests: an unknown key is a 401 (a query on api_keys), not a 500
        got = httpx.get(f"{base}/v1/jobs", headers={"Authorization": "Bearer dk_unknown"})
        assert got.status_code == 401, got.text
    finally:
        code = proc.stop()
    assert code == 0, proc.text()[-3000:]
    assert "Traceback" not in proc.text()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # SQLite belongs to one process
def test_processes_starting_at_once_on_one_fresh_database_all_come_up(database_url, tmp_path):
    """Two `distillery api` and a `distillery worker`, started together, as a deployment starts them."""
    redis.Redis.from_url(REDIS_URL).flushdb()  # the worker consumes this db's queue: nothing left over there
    assert tables_and_revision(database_url) == (set(), None)
    (first, first_url), (second, second_url) = api(database_url, tmp_path, "api1"), api(database_url, tmp_path, "api2")
    worker = Proc(["worker", "--queue", "cpu"], database_url, tmp_path / "data", tmp_path / "worker.log")
    procs = [first, second, worker]
    try:
        wait_ready(first, first_url)
        wait_ready(second, second_url)
        deadline = time.time() + 120
        while " ready." not in worker.text():
            assert worker.proc.poll() is None, f"the worker exited:\n{worker.text()[-3000:]}"
            assert time.time() < deadline, f"the worker did not start:\n{worker.text()[-3000:]}"
            time.sleep(0.2)
        assert tables_and_revision(database_url)[1] == head_revision(database_url)
    finally:
        codes = [p.stop() for p in procs]
    logs = "\n".join(p.text() for p in procs)
    assert codes == [0, 0, 0], logs[-4000:]
    assert "Traceback" not in logs and "DuplicateTable" not in logs
