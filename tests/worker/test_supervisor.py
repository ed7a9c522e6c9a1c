"""`distillery worker --gpus`: one Celery process per GPU, each seeing only its own, a parent that never
loads torch, children started again when they die, and all of them stopped on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from .conftest import WorkerProc, wait_until


def children(parent: int) -> dict[int, dict[str, str]]:
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        env = dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)
        if env.get("DISTILLERY_PARENT_PID") == str(parent):
            found[int(entry.name)] = env
    return found


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # no database work here
def test_one_worker_process_per_gpu(settings):
    sup = WorkerProc(settings, queue="gpu", via_cli=True, args=("--gpus", "0,1"), ready=2)
    try:
        kids = children(sup.proc.pid)
        assert sorted(env["CUDA_VISIBLE_DEVICES"] for env in kids.values()) == ["0", "1"]
        names = set(re.findall(r"(gpu[01]\.\d+@\S+) ready\.", sup.text()))
        assert len(names) == 2
        # the parent only supervises: torch (and with it CUDA) is never loaded there
        assert "libtorch" not in Path(f"/proc/{sup.proc.pid}/maps").read_text()
        assert all("libtorch" in Path(f"/proc/{pid}/maps").read_text() for pid in kids)

        gone = next(pid for pid, env in kids.items() if env["CUDA_VISIBLE_DEVICES"] == "0")
        os.kill(gone, signal.SIGKILL)  # a worker that dies (out of memory, say) is started again
        wait_until(lambda: any(env["CUDA_VISIBLE_DEVICES"] == "0" and pid != gone
                               for pid, env in children(sup.proc.pid).items()), timeout=30, what="a restart")
        # stopped once it is up: a Celery process still booting (importing torch on a loaded machine) may
        # take longer to act on SIGTERM than this test's stop allows, and CI once saw exactly that
        wait_until(lambda: sup.text().count(" ready.") >= 3, timeout=90, what="the restarted worker")
        kids = children(sup.proc.pid)
    finally:
        assert sup.stop() == 0
    time.sleep(0.3)
    assert [pid for pid in kids if Path(f"/proc/{pid}").exists()] == []
