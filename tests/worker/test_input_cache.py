"""A worker's cache of uploads (store s3) is cut back least recently used first, and never loses an entry that a
job on the machine holds, whichever process that job runs in."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from datetime import datetime
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


class _Listing:
    """What os.scandir returns, over entries already read."""

    def __init__(self, entries: list) -> None:
        self._it = iter(entries)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._it)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def close(self) -> None:
        pass


def test_an_entry_removed_by_another_process_mid_walk_does_not_fail_eviction(tmp_path, monkeypatch):
    now = time.time()
    _entry(tmp_path, "uploads/datasets/ds_old", 300, now - 500)
    _entry(tmp_path, "uploads/models/mdl_going", 400, now - 400)
    doomed = tmp_path / "uploads/models/mdl_going"
    (doomed / "sub").mkdir()
    (doomed / "sub" / ".weights.bin.1a2b.part").write_bytes(b"x" * 50)
    real, fired = os.scandir, []

    def scandir(path="."):
        listed = _Listing(list(real(path)))
        if not fired and isinstance(path, (str, os.PathLike)) and Path(path) == doomed:
            fired.append(path)
            shutil.rmtree(doomed)  # another worker process's evictor removes it just after this listing
        return listed

    monkeypatch.setattr(os, "scandir", scandir)
    assert input_cache.evict(tmp_path, 100) == ["uploads/datasets/ds_old"]
    assert fired and not doomed.exists() and not (tmp_path / "uploads/datasets/ds_old").exists()


class _Store:
    """The reading side of the S3 store, over a dict; `on_get` sees each fetch as it starts."""

    def __init__(self, objects: dict[str, bytes], on_get) -> None:
        self.objects, self.on_get = objects, on_get

    def size(self, key: str) -> int | None:
        return len(self.objects[key]) if key in self.objects else None

    def local_path(self, key: str) -> Path | None:
        return None  # a remote store: every read is a fetch

    def list(self, prefix: str):
        return [(k, len(v), datetime.now()) for k, v in sorted(self.objects.items()) if k.startswith(prefix)]

    def get_file(self, key: str, local: Path) -> Path:
        self.on_get(key)
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(self.objects[key])
        return local


def _new_job(tmp_path: Path):
    """A cache of 700 bytes under a cap of 1000, and a job whose new teacher adds 500 (its dataset is cached)."""
    now = time.time()
    _entry(tmp_path, "uploads/models/mdl_old", 400, now - 400)
    _entry(tmp_path, "uploads/datasets/ds_1", 0, now - 500)
    (tmp_path / "uploads/datasets/ds_1/train.jsonl").write_bytes(b"d" * 300)
    objects = {"uploads/models/mdl_new/model.safetensors": b"m" * 450, "uploads/models/mdl_new/config.json": b"c" * 50,
               "uploads/datasets/ds_1/train.jsonl": b"d" * 300}
    recipe = {"teacher": {"source": "local", "path": "uploads/models/mdl_new"},
              "data": {"train": "uploads/datasets/ds_1/train.jsonl"}}
    return objects, recipe, {"uploads/models/mdl_new", "uploads/datasets/ds_1"}


def test_room_for_a_new_input_is_made_before_it_is_fetched(tmp_path):
    objects, recipe, keep = _new_job(tmp_path)
    seen = []
    store = _Store(objects, lambda key: seen.append((key, (tmp_path / "uploads/models/mdl_old").exists())))
    input_cache.prepare(store, tmp_path, recipe, 1000, keep)
    # 700 cached + 500 incoming > 1000: the old teacher went before the first byte of the new one arrived
    assert sorted(seen) == [("uploads/models/mdl_new/config.json", False),
                            ("uploads/models/mdl_new/model.safetensors", False)]
    assert (tmp_path / "uploads/models/mdl_new/model.safetensors").stat().st_size == 450
    assert (tmp_path / "uploads/datasets/ds_1/train.jsonl").is_file()  # the job's own cached input stays


def test_a_failing_eviction_never_fails_the_job(tmp_path, monkeypatch):
    objects, recipe, keep = _new_job(tmp_path)

    def broken(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "uploads/models/mdl_old"))

    monkeypatch.setattr(input_cache, "evict", broken)
    input_cache.prepare(_Store(objects, lambda key: None), tmp_path, recipe, 1000, keep)
    assert (tmp_path / "uploads/models/mdl_new/config.json").is_file()  # fetched all the same
