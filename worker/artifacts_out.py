"""A finished job's downloadable files: the artifact directory as one tar (a multi-task job: one tar per
student, model-<name>.tar), plus report.json and manifest.json, each recorded as an Artifact row with its
size and sha256.

The tar is uncompressed (weights barely compress) and deterministic: members in sorted order, owner,
mode and mtime fixed, so rebuilding it after a redelivery gives the same bytes and the same ETag.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.base import new_id
from app.db.models import Artifact
from worker.engine.layout import RunLayout

TAR_NAME, TAR_ROOT = "model.tar", "model"  # `tar xf model.tar` gives model/, which load_artifact reads


@dataclass(frozen=True)
class FileInfo:
    name: str
    path: str  # relative to data_dir
    media_type: str
    size_bytes: int
    sha256: str


class _HashingWriter:
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, fh) -> None:
        self.fh, self.digest, self.size = fh, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.fh.write(data)


def build_tar(src: Path, dest: Path, mtime: float) -> tuple[int, str]:
    """Write `src` as `dest` (a temporary name, then a rename, so a reader never sees half a tar); return
    its size and sha256, computed while writing."""
    tmp = dest.with_name(dest.name + ".partial")
    with open(tmp, "wb") as fh:
        writer = _HashingWriter(fh)
        with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for path in [src, *sorted(src.rglob("*"), key=lambda p: p.relative_to(src).as_posix())]:
                if path.is_symlink() or not (path.is_dir() or path.is_file()):
                    continue  # the engine writes plain files only; never follow or pack a link
                info = tarfile.TarInfo(TAR_ROOT if path == src else f"{TAR_ROOT}/{path.relative_to(src).as_posix()}")
                info.mtime, info.uid, info.gid, info.uname, info.gname = int(mtime), 0, 0, "", ""
                if path.is_dir():
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                else:
                    info.size, info.mode = path.stat().st_size, 0o644
                    with open(path, "rb") as member:
                        tar.addfile(info, member)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, dest)
    return writer.size, writer.digest.hexdigest()


def _hash_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return path.stat().st_size, digest.hexdigest()


def student_tar_name(student: str) -> str:
    return f"model-{student}.tar"


def collect(out_dir: Path, data_dir: Path, created_at: datetime, *, with_tar: bool,
            students: list[str] = ()) -> list[FileInfo]:
    """Build the tar (when this run left an artifact; one per student of a multi-task job) and describe every
    file to record."""
    files: list[FileInfo] = []
    rel = out_dir.resolve().relative_to(data_dir.resolve()).as_posix()
    layout = RunLayout(out_dir)
    if with_tar and layout.artifact.is_dir():
        size, sha = build_tar(layout.artifact, out_dir / TAR_NAME, created_at.timestamp())
        files.append(FileInfo(TAR_NAME, f"{rel}/{TAR_NAME}", "application/x-tar", size, sha))
    for student in students:  # each student is its own artifact: model-<name>.tar, unpacking to model/
        src = layout.student(student).artifact
        if src.is_dir():
            name = student_tar_name(student)
            size, sha = build_tar(src, out_dir / name, created_at.timestamp())
            files.append(FileInfo(name, f"{rel}/{name}", "application/x-tar", size, sha))
    for path in (layout.report, layout.manifest):
        if path.is_file():
            size, sha = _hash_file(path)
            files.append(FileInfo(path.name, f"{rel}/{path.name}", "application/json", size, sha))
    return files


def publish(store, data_dir: Path, files: list[FileInfo]) -> None:
    """Put each file (its path under data_dir is its key) into the artifact store."""
    for f in files:
        store.put_file(data_dir / f.path, f.path)


def record(session: Session, job_id: str, owner: str, files: list[FileInfo]) -> None:
    """One row per (job, name): a redelivered job updates its rows instead of adding more."""
    existing = {a.name: a for a in session.scalars(select(Artifact).where(Artifact.job_id == job_id))}
    for f in files:
        row = existing.get(f.name)
        if row is None:
            row = Artifact(id=new_id("art"), job_id=job_id, owner=owner, name=f.name)
            session.add(row)
        row.path, row.media_type, row.size_bytes, row.sha256 = f.path, f.media_type, f.size_bytes, f.sha256
