"""Checkpoints through the artifact store, so that a job resumed on another machine skips what its first worker
finished: stages, and for multi-task and search jobs each student's stages, search nodes and trials.

The engine writes each checkpoint directory with its marker file last (stage.json, node.json, trial.json,
probe.json) and reads back only directories that have the marker; it calls `RunContext.on_checkpoint` with
the directory once done. Here that directory is put into the store under its path below data_dir (jobs/<id>/...),
the marker again last, and before a run whatever the store holds for the job is fetched back into out_dir.
With the local store both are no-ops (the keys are the files).

Unlike uploads, checkpoint keys are rewritten when a stage runs again in a later attempt, so a local copy is
never trusted for its size: the store is the truth. A local checkpoint directory is kept only when its marker
is byte for byte the stored one (markers carry each run's timings, so two attempts' markers differ) and every
stored file is there; any other (an older attempt's, or one without its marker) is deleted before fetching.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from app.store import Store
from worker import stage_info
from worker.engine.layout import CHECKPOINT_SLOTS, MARKERS, RESUMABLE

log = logging.getLogger("distillery.worker")
SLOTS = CHECKPOINT_SLOTS  # where checkpoint directories lie under out_dir (worker/engine/layout.py)


def _stored(store: Store, base: str) -> dict[str, dict[str, int]]:
    """The job's stored checkpoints: {directory key: {file key: size}}, only directories with a marker."""
    keys = {k: size for part in RESUMABLE for k, size, _ in store.list(f"{base}/{part}/")}
    dirs = {k.rsplit("/", 1)[0] for k in keys if k.rsplit("/", 1)[-1] in MARKERS}
    groups: dict[str, dict[str, int]] = {d: {} for d in dirs}
    for key, size in keys.items():
        owners = [d for d in dirs if key.startswith(d + "/")]
        if owners:
            groups[max(owners, key=len)][key] = size  # the deepest: a checkpoint's own files
    return groups


def _local_marker(directory: Path) -> Path | None:
    return next((directory / m for m in MARKERS if (directory / m).is_file()), None)


def _complete_copy(store: Store, data_dir: Path, directory: Path, files: dict[str, int] | None) -> bool:
    """Whether a local checkpoint directory is the stored one, whole."""
    marker = _local_marker(directory)
    if marker is None or not files:
        return False
    key = marker.resolve().relative_to(data_dir.resolve()).as_posix()
    if key not in files or store.read_bytes(key) != marker.read_bytes():
        return False
    return all((data_dir / k).is_file() and (data_dir / k).stat().st_size == size for k, size in files.items())


def fetch(store: Store, data_dir: Path, out_dir: Path) -> None:
    """Bring this job's stored checkpoints into out_dir (a fresh worker's resume point), dropping local
    checkpoint directories that are not the stored ones first."""
    base = out_dir.resolve().relative_to(data_dir.resolve()).as_posix()
    if store.local_path(base) is not None:
        return  # the store is this directory
    groups = _stored(store, base)
    current = set()
    for pattern in SLOTS:
        for directory in sorted(out_dir.glob(pattern)):
            if not directory.is_dir() or directory.is_symlink():
                continue
            key = directory.resolve().relative_to(data_dir.resolve()).as_posix()
            if _complete_copy(store, data_dir, directory, groups.get(key)):
                current.add(key)
            else:
                log.info("checkpoint %s: the local copy is not the stored one; dropping it", key)
                shutil.rmtree(directory, ignore_errors=True)
    for directory, files in sorted(groups.items()):
        if directory in current:
            continue
        ordered = sorted(files, key=lambda k: k.rsplit("/", 1)[-1] in MARKERS)  # the marker last
        for key in ordered:
            store.get_file(key, data_dir / key)


def push(store: Store, data_dir: Path, checkpoint_dir: Path, worker: dict | None = None) -> None:
    marker = _local_marker(checkpoint_dir)
    if marker is None:
        return
    if worker is not None:  # who ran it travels with the checkpoint (worker/stage_info.py)
        stage_info.write(checkpoint_dir, marker, worker)
    base = checkpoint_dir.resolve().relative_to(data_dir.resolve()).as_posix()
    files = sorted(p for p in checkpoint_dir.rglob("*")
                   if p.is_file() and not p.is_symlink() and p != marker and not p.name.startswith("."))
    if store.local_path(base) is not None:
        return  # the files are the store's
    keys = {f"{base}/{p.relative_to(checkpoint_dir).as_posix()}": p for p in [*files, marker]}
    marker_key = f"{base}/{marker.name}"
    # An earlier attempt's copy of this directory goes first (its marker before the rest), so the store never
    # shows a marker beside another attempt's files.
    stale = [k for k, _, _ in store.list(base + "/")]
    for key in sorted(stale, key=lambda k: k != marker_key):
        if key == marker_key or key not in keys:
            store.delete(key)
    for key, path in keys.items():  # the marker last: a stored checkpoint with it is complete
        store.put_file(path, key)


class Uploader:
    """RunContext.on_checkpoint: store each finished checkpoint; a failure only costs a later resume."""

    def __init__(self, store: Store, data_dir: Path, worker: dict | None = None) -> None:
        self.store, self.data_dir, self.worker = store, data_dir, worker

    def __call__(self, checkpoint_dir: Path) -> None:
        try:
            push(self.store, self.data_dir, checkpoint_dir, self.worker)
        except Exception as exc:  # only a later resume elsewhere needs it: never fail the job over it
            log.warning("could not store the checkpoint %s: %s", checkpoint_dir, exc)
