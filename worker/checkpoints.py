"""Stage checkpoints through the artifact store, so that a job resumed on another machine skips the stages
its first worker finished.

The engine checkpoints each finished stage under out_dir/stages/NN-kind/ and marks it done with stage.json,
written last; its resume reads only directories that have the marker. Here each finished stage is put into
the store under jobs/<id>/stages/NN-kind/ with stage.json again last, and before a run whatever the store
holds for the job is fetched back into out_dir. With the local store both are no-ops (the keys are the files).
"""

from __future__ import annotations

import logging
import re
from contextlib import suppress
from pathlib import Path

from app.store import Store, materialise
from worker.engine import ProgressEvent

log = logging.getLogger("distillery.worker")
_STAGE = re.compile(r"^(\d+):([a-z_-]+)$")
MARKER = "stage.json"


def fetch(store: Store, data_dir: Path, out_dir: Path) -> None:
    """Bring this job's stored checkpoints into out_dir (a fresh worker's resume point)."""
    key = f"{out_dir.resolve().relative_to(data_dir.resolve()).as_posix()}/stages"
    with suppress(FileNotFoundError):  # no stage has finished yet
        materialise(store, data_dir, key, is_dir=True)


def push(store: Store, data_dir: Path, stage_dir: Path) -> None:
    if not (stage_dir / MARKER).is_file():
        return
    base = stage_dir.resolve().relative_to(data_dir.resolve()).as_posix()
    files = sorted(p for p in stage_dir.rglob("*") if p.is_file() and not p.is_symlink() and p.name != MARKER)
    for path in [*files, stage_dir / MARKER]:  # the marker last: a stored stage with it is complete
        store.put_file(path, f"{base}/{path.relative_to(stage_dir).as_posix()}")


class Uploader:
    """A progress hook that passes events on and pushes each stage when the engine reports it finished."""

    def __init__(self, store: Store, data_dir: Path, out_dir: Path, on_progress) -> None:
        self.store, self.data_dir, self.out_dir, self.on_progress = store, data_dir, out_dir, on_progress
        self.resumed: set[str] = set()

    def __call__(self, event: ProgressEvent) -> None:
        self.on_progress(event)
        match = _STAGE.match(event.stage)
        if match is None:
            return
        if event.message == "resumed from checkpoint":
            self.resumed.add(event.stage)
        elif event.message in ("passed", "failed-gate") and event.stage not in self.resumed:
            stage_dir = self.out_dir / "stages" / f"{int(match[1]):02d}-{match[2]}"
            try:
                push(self.store, self.data_dir, stage_dir)
            except Exception as exc:  # only a later resume elsewhere needs it: never fail the job over it
                log.warning("could not store the checkpoint %s: %s", stage_dir, exc)
