"""Checkpoints through an S3 store: a search's nodes and trials and a student's stages, pushed by the engine's
on_checkpoint hook and fetched back into a fresh worker's data directory."""

from __future__ import annotations

from app.store import S3Store
from tests.s3 import new_bucket
from worker import checkpoints


def _write(directory, marker: str) -> None:
    (directory / "artifact").mkdir(parents=True)
    (directory / "artifact" / "model.safetensors").write_bytes(b"weights")
    (directory / marker).write_text('{"done": true}')


def test_search_and_student_checkpoints_round_trip_through_the_store(tmp_path, s3_endpoint):
    store = S3Store(new_bucket(s3_endpoint), prefix="p/", endpoint_url=s3_endpoint)
    first, second = tmp_path / "first", tmp_path / "second"
    job = first / "jobs" / "job_1"
    made = {job / "search" / "nodes" / "d2": "node.json", job / "search" / "trials" / "d2-s00-fp32": "trial.json",
            job / "students" / "topics" / "stages" / "00-distill": "stage.json"}
    puts = []
    real_put = store.put_file
    store.put_file = lambda path, key: (puts.append(key), real_put(path, key))[1]
    upload = checkpoints.Uploader(store, first)
    for directory, marker in made.items():
        _write(directory, marker)
        upload(directory)
        assert puts[-1].endswith(marker)  # the marker last: a stored checkpoint with it is complete
    unfinished = job / "search" / "nodes" / "d3"
    (unfinished / "artifact").mkdir(parents=True)
    upload(unfinished)  # no marker yet: nothing is stored
    assert not any("/d3/" in k for k in puts)

    checkpoints.fetch(store, second, second / "jobs" / "job_1")
    for directory, marker in made.items():
        copy = second / directory.relative_to(first)
        assert (copy / marker).is_file() and (copy / "artifact" / "model.safetensors").read_bytes() == b"weights"
    checkpoints.fetch(store, second, second / "jobs" / "job_2")  # nothing stored for it: not an error


def _attempt(directory, weights: bytes, seconds: float) -> None:
    (directory / "artifact").mkdir(parents=True, exist_ok=True)
    (directory / "artifact" / "model.safetensors").write_bytes(weights)
    (directory / "stage.json").write_text(f'{{"index": 0, "duration_s": {seconds}}}')


def test_a_stale_local_checkpoint_of_another_attempt_is_replaced_not_mixed(tmp_path, s3_endpoint):
    store = S3Store(new_bucket(s3_endpoint), endpoint_url=s3_endpoint)
    a, b = tmp_path / "machine-a", tmp_path / "machine-b"
    # attempt 1 on machine A finished stage 0 locally; its push was cut short (no marker in the store) and
    # it left a stray file there
    stage_a = a / "jobs" / "job_1" / "stages" / "00-distill"
    _attempt(stage_a, b"A" * 64, 1.0)
    (tmp_path / "stray").write_bytes(b"old")
    store.put_file(tmp_path / "stray", "jobs/job_1/stages/00-distill/artifact/old-extra.bin")
    # attempt 1 also left half a stage 1 on A (no marker)
    half = a / "jobs" / "job_1" / "stages" / "01-prune"
    (half / "artifact").mkdir(parents=True)
    (half / "artifact" / "model.safetensors").write_bytes(b"partial")
    # attempt 2 on machine B ran stage 0 again: same sizes, other bytes, and stored it whole
    stage_b = b / "jobs" / "job_1" / "stages" / "00-distill"
    _attempt(stage_b, b"B" * 64, 2.0)
    checkpoints.Uploader(store, b, {"host": "machine-b", "pid": 1, "worker": "w-b", "cuda_visible_devices": None})(
        stage_b)
    keys = [k for k, _, _ in store.list("jobs/job_1/")]
    assert "jobs/job_1/stages/00-distill/artifact/old-extra.bin" not in keys  # the earlier attempt's stray is gone
    assert "jobs/job_1/stages/00-distill/worker.json" in keys

    # attempt 3 on machine A: the store is the truth, whatever sizes match locally
    checkpoints.fetch(store, a, a / "jobs" / "job_1")
    assert (stage_a / "artifact" / "model.safetensors").read_bytes() == b"B" * 64
    assert '"duration_s": 2.0' in (stage_a / "stage.json").read_text()
    assert not half.exists()  # no marker: not a checkpoint, dropped rather than resumed into
    assert '"machine-b"' in (stage_a / "worker.json").read_text()

    # a local copy that IS the stored one is kept as it is (not fetched again)
    fetched = []
    real_get = store.get_file
    store.get_file = lambda key, local: (fetched.append(key), real_get(key, local))[1]
    checkpoints.fetch(store, a, a / "jobs" / "job_1")
    assert fetched == [] and (stage_a / "artifact" / "model.safetensors").read_bytes() == b"B" * 64
    # ... unless a file of it is missing: then the whole directory comes again, its marker last
    (stage_a / "artifact" / "model.safetensors").unlink()
    checkpoints.fetch(store, a, a / "jobs" / "job_1")
    assert (stage_a / "artifact" / "model.safetensors").read_bytes() == b"B" * 64
    assert fetched[-1] == "jobs/job_1/stages/00-distill/stage.json"
