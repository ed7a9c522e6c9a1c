"""A worker's cache of uploads (store s3) is cut back least recently used first, and never loses an entry that a
job on the machine holds, whichever process that job runs in."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from worker import input_cache

ROOT = Path(__file__).resolve().parents[2]


def _entry(data_dir: Path, key: str, size: int, used: float) -> None:
    path = data_dir / key
    path.mkdir(parents=True)
    (path / "blob").write_bytes(b"x" * size)
    lock = data_dir / "uploads" / ".locks" / f"{key.split('/')[1]}-{key.split('/')[2]}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.touch()
    os.utime(lock, (used, used))


def test_entry_of_names_only_uploads():
    assert input_cache.entry_of("uploads/datasets/ds_1/train.jsonl") == "uploads/datasets/ds_1"
    assert input_cache.entry_of("uploads/models/mdl_1") == "uploads/models/mdl_1"
    for other in ("uploads/.staging/x/y", "jobs/job_1/model.tar", "uploads/datasets", "/abs/model"):
        assert input_cache.entry_of(other) is None


def test_least_recently_used_go_first_and_held_or_kept_entries_stay(tmp_path):
    now = time.time()
    _entry(tmp_path, "uploads/models/mdl_old", 400, now - 400)
    _entry(tmp_path, "uploads/datasets/ds_older", 300, now - 500)
    _entry(tmp_path, "uploads/datasets/ds_new", 300, now - 10)
    _entry(tmp_path, "uploads/models/mdl_kept", 500, now - 1000)  # the oldest, but the running job's input
    (tmp_path / "uploads" / ".staging" / "x").mkdir(parents=True)  # not an entry: never touched
    removed = input_cache.evict(tmp_path, 900, keep={"uploads/models/mdl_kept"})
    # 1500 bytes: the two least recently used (besides the kept one) go, then 800 <= 900
    assert removed == ["uploads/datasets/ds_older", "uploads/models/mdl_old"]
    assert not (tmp_path / "uploads/datasets/ds_older").exists()
    assert (tmp_path / "uploads/models/mdl_kept/blob").is_file() and (tmp_path / "uploads/datasets/ds_new").is_dir()
    assert (tmp_path / "uploads" / ".staging" / "x").is_dir()
    assert input_cache.evict(tmp_path, 900) == []  # under the cap: nothing more


def test_an_entry_held_by_another_process_is_never_removed(tmp_path):
    now = time.time()
    _entry(tmp_path, "uploads/models/mdl_busy", 800, now - 1000)
    _entry(tmp_path, "uploads/datasets/ds_idle", 100, now - 5)
    # another worker process on this machine runs a job that reads mdl_busy
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\nfrom worker import input_cache\n"
         "with input_cache.hold(Path(sys.argv[1]), ['uploads/models/mdl_busy/config.json']):\n"
         "    print('held', flush=True)\n    time.sleep(60)\n", str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        removed = input_cache.evict(tmp_path, 0)
        assert removed == ["uploads/datasets/ds_idle"] and (tmp_path / "uploads/models/mdl_busy/blob").is_file()
    finally:
        holder.kill()
        holder.wait(10)
    # once that job has ended, the entry may go
    assert input_cache.evict(tmp_path, 0) == ["uploads/models/mdl_busy"]


def test_holding_marks_an_entry_as_just_used(tmp_path):
    now = time.time()
    _entry(tmp_path, "uploads/models/mdl_a", 100, now - 100)
    _entry(tmp_path, "uploads/models/mdl_b", 100, now - 50)
    with input_cache.hold(tmp_path, ["uploads/models/mdl_a"]) as held:
        assert held == {"uploads/models/mdl_a"}
    # mdl_a was used last now: mdl_b is the least recently used
    assert input_cache.evict(tmp_path, 100) == ["uploads/models/mdl_b"]
