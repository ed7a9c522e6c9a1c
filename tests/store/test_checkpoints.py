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
