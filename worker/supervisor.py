"""Starting and stopping Celery worker processes: `distillery worker` runs one per GPU (or N for the cpu
queue), `distillery serve` runs one beside the API.

This module imports neither torch nor the engine: the parent process never initialises CUDA, and each
worker process sees only its own GPU through CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("distillery.supervisor")
PARENT_ENV = "DISTILLERY_PARENT_PID"
ROOT = Path(__file__).resolve().parents[1]


def worker_command(queues: Sequence[str], name: str, loglevel: str = "INFO") -> list[str]:
    # solo pool: the task runs in the worker process itself (no fork after CUDA is initialised, one
    # process per GPU); prefetch 1: a worker holds one message, so a long job never blocks another.
    return [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", ",".join(queues),
            "--pool=solo", "--concurrency=1", "--prefetch-multiplier=1", "-n", name, f"--loglevel={loglevel}",
            "--without-gossip", "--without-mingle"]


class WorkerProcess:
    """One Celery worker subprocess, in its own process group so that a terminal's Ctrl-C reaches only the
    parent, which then stops its children in order."""

    def __init__(self, cmd: list[str], env: dict[str, str], log_path: Path | None = None) -> None:
        self.cmd, self.env, self.log_path = cmd, env, log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**self.env, PARENT_ENV: str(os.getpid())}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        out = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            out = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it; closed below
        try:
            self.proc = subprocess.Popen(self.cmd, env=env, stdout=out, stderr=subprocess.STDOUT if out else None,
                                         process_group=0)
        finally:
            if out is not None:
                out.close()

    @property
    def running(self) -> bool:
        """poll() also reaps a worker that has exited: no zombie is left behind."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id of the latest start (kept once it has exited: its job leases name it)."""
        return self.proc.pid if self.proc is not None else None

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (warm shutdown: the running job is handed back at its next step), then SIGKILL."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("worker %s did not stop in %.0f s; killing it", self.proc.pid, timeout)
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def watch_parent() -> None:
    """In a worker process: end with a warm shutdown when the supervisor that started it is gone (killed
    with SIGKILL, say), instead of living on as an orphan."""
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return

    def loop() -> None:
        while os.getppid() == int(parent):
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=loop, name="watch-parent", daemon=True).start()


def supervise(workers: list[WorkerProcess], stop: threading.Event, restart_delay: float = 5.0) -> None:
    """Start the workers and keep them running until `stop` is set; a worker that dies (a job that ran out
    of memory, say) is started again. The job it held is resumed through its lease and the reconciler."""
    for w in workers:
        w.start()
    died_at: dict[int, float] = {}
    while not stop.wait(1.0):
        for i, w in enumerate(workers):
            if w.running:
                continue
            first = died_at.setdefault(i, time.monotonic())
            if time.monotonic() - first >= restart_delay:
                log.warning("worker %d exited with %s; starting it again", i, w.proc.returncode if w.proc else None)
                died_at.pop(i)
                w.start()


def stop_all(workers: list[WorkerProcess], timeout: float = 30.0) -> None:
    for w in workers:  # signal all first, so they shut down in parallel
        if w.running and w.proc is not None:
            w.proc.send_signal(signal.SIGTERM)
    for w in workers:
        w.stop(timeout)


def detect_gpus(env: dict[str, str] | None = None) -> tuple[list[str], str]:
    """The GPUs a `--queue gpu` worker without --gpus runs on, and how they were found: those CUDA_VISIBLE_DEVICES
    names when it is set (empty or -1: none), else one per line of `nvidia-smi -L`. Never through torch: this
    process must not initialise CUDA before its children choose their GPU."""
    env = os.environ if env is None else env
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = []
        for part in (p.strip() for p in visible.split(",")):
            if not part or part.startswith("-"):
                break  # CUDA ignores this entry and every one after it
            ids.append(part)
        return ids, f"CUDA_VISIBLE_DEVICES={visible!r}"
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60,
                             env={**os.environ, **env})
    except FileNotFoundError:
        return [], "nvidia-smi is not installed"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [], f"nvidia-smi -L failed: {exc}"
    if out.returncode != 0:
        return [], f"nvidia-smi -L failed: {(out.stderr or out.stdout).strip()[:200]}"
    count = sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
    return [str(i) for i in range(count)], f"nvidia-smi -L lists {count}"


def run_workers(queue: str, gpus: list[str], concurrency: int, loglevel: str = "INFO") -> int:
    """`distillery worker`: one process per GPU (CUDA_VISIBLE_DEVICES set, a distinct node name), or
    `concurrency` processes for the queue; stopped on SIGINT/SIGTERM."""
    import socket

    host, pid = socket.gethostname(), os.getpid()
    workers = []
    for i, gpu in enumerate(gpus or [None] * concurrency):
        env = dict(os.environ)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        elif concurrency > 1 and "OMP_NUM_THREADS" not in env:  # N CPU workers share the cores, not N times each
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // concurrency))
        name = f"{queue}{gpu if gpu is not None else i}.{pid}@{host}"
        workers.append(WorkerProcess(worker_command([queue], name, loglevel), env))
    stop = threading.Event()

    def on_signal(signum, frame) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"distillery worker: {len(workers)} process(es) on queue {queue}"
          + (f", GPUs {','.join(gpus)}" if gpus else ""), file=sys.stderr, flush=True)
    try:
        supervise(workers, stop)
    finally:
        stop_all(workers)
    return 0
