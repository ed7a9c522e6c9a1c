"""Checkpoints through the artifact store, so that a job resumed on another machine skips what its first worker
finished: stages, and for multi-task and search jobs each student's stages, search nodes and trials.

The engine writes each checkpoint directory with its marker file last (stage.json, node.json, trial.json,
probe.json) and reads back only directories that have the marker; it calls `RunContext.on_checkpoint` with
the directory once done. Here that directory is put into the store under its path below data_dir (jobs/<id>/...),
the marker again last, and before a run whatever the store holds for the job is fetched back into out_dir.
With the local store both are no-ops (the keys are the files).
"""

from __future__ import annotations

import logging
from contextlib import suppress
from pathlib import Path

from app.store import Store, materialise

log = logging.getLogger("distillery.worker")
MARKERS = ("stage.json", "node.json", "trial.json", "probe.json")
# what a job's out_dir holds that a later attempt resumes from
RESUMABLE = ("stages", "students", "search")


def fetch(store: Store, data_dir: Path, out_dir: Path) -> None:
    """Bring this job's stored checkpoints into out_dir (a fresh worker's resume point)."""
    base = out_dir.resolve().relative_to(data_dir.resolve()).as_posix()
    for part in RESUMABLE:
        with suppress(FileNotFoundError):  # nothing of this kind has finished yet
            materialise(store, data_dir, f"{base}/{part}", is_dir=True)


def push(store: Store, data_dir: Path, checkpoint_dir: Path) -> None:
    marker = next((checkpoint_dir / m for m in MARKERS if (checkpoint_dir / m).is_file()), None)
    if marker is None:
        return
    base = checkpoint_dir.resolve().relative_to(data_dir.resolve()).as_posix()
    files = sorted(p for p in checkpoint_dir.rglob("*")
                   if p.is_file() and not p.is_symlink() and p != marker)
    for path in [*files, marker]:  # the marker last: a stored checkpoint with it is complete
        store.put_file(path, f"{base}/{path.relative_to(checkpoint_dir).as_posix()}")


class Uploader:
    """RunContext.on_checkpoint: store each finished checkpoint; a failure only costs a later resume."""

    def __init__(self, store: Store, data_dir: Path) -> None:
        self.store, self.data_dir = store, data_dir

    def __call__(self, checkpoint_dir: Path) -> None:
        try:
            push(self.store, self.data_dir, checkpoint_dir)
        except Exception as exc:  # only a later resume elsewhere needs it: never fail the job over it
            log.warning("could not store the checkpoint %s: %s", checkpoint_dir, exc)
