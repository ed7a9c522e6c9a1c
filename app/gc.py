"""`distillery gc`: the retention policy. Removes, once older than settings.retention_days,

- a finished job's outputs: its Artifact rows and everything under jobs/<id>/ in the store (the files and the
  stage checkpoints), plus that directory on this machine; the job row and its report stay, as history;
- uploaded datasets and models (rows, store objects, this machine's copies) that no live job needs.

A job is live while queued, running or cancelling: whatever its request names (dataset and model ids, each
task's too) or its recipe reads (store keys) is kept, whatever its age. Rows go first, in one transaction, and
store objects after: a crash in between leaves only unreferenced objects, which the next run's sweep of the
store removes. With the S3 store, multipart uploads left open by a process killed mid-upload are aborted too.

A submission races gc: it reads its datasets and model, dry-runs for seconds, then commits. So gc locks the
candidate rows first (FOR UPDATE SKIP LOCKED on PostgreSQL: a row a submission holds FOR SHARE is skipped,
this run) and reads the live jobs only then, and the submission re-reads its rows FOR SHARE before committing
(app/services/jobs.py): a job either is seen here or finds its input gone (409). SQLite has no row locks but
serialises writers: gc's transaction starts with a write (the idempotency-key purge), taking the write lock
before it decides anything, and a submission re-reads its rows after its own first write.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from worker.engine.references import SNAPSHOTS

from .db.base import session_scope, utcnow
from .db.models import Artifact, DatasetRecord, Job, ModelRecord
from .repositories.jobs import purge_idempotency_keys
from .settings import Settings
from .store import get_store, store_inputs

LIVE = ("queued", "running", "cancelling")
# No upload takes a day: a staging directory untouched that long belongs to an API process that died mid-upload.
STAGING_STALE = timedelta(hours=24)


@dataclass
class Removed:
    artifacts: list[str] = field(default_factory=list)  # store keys
    jobs: list[str] = field(default_factory=list)  # ids of finished jobs whose outputs and checkpoints went
    datasets: list[str] = field(default_factory=list)  # ids
    models: list[str] = field(default_factory=list)  # ids
    objects: list[str] = field(default_factory=list)  # store keys of removed uploads and orphans
    staging: list[str] = field(default_factory=list)  # stale partial uploads (an API died mid-upload)
    multipart: list[str] = field(default_factory=list)  # keys of stale multipart uploads aborted (store s3)
    snapshots: list[str] = field(default_factory=list)  # digests of verified model copies no model row has now
    idempotency_keys: int = 0  # expired ones: they outlive no job's retention, only their 24 hours


def _aware(when: datetime) -> datetime:
    from worker.lease import aware  # SQLite hands back naive UTC datetimes

    return aware(when)


def _live_references(session: Session) -> tuple[set[str], set[str]]:
    """(ids, store keys) that queued, running or cancelling jobs need."""
    ids: set[str] = set()
    keys: set[str] = set()
    for request, recipe in session.execute(select(Job.request, Job.recipe).where(Job.status.in_(LIVE))):
        data = (request or {}).get("data") or {}
        tasks = [v for spec in ((request or {}).get("tasks") or {}).values() if isinstance(spec, dict)
                 for v in (spec.get("train"), spec.get("eval"))]
        ids.update(v for v in [data.get("train"), *(data.get("eval") or {}).values(), *tasks] if isinstance(v, str))
        if isinstance(model := ((request or {}).get("teacher") or {}).get("model"), str):
            ids.add(model)
        keys.update(key.rstrip("/") for key, _ in store_inputs(recipe or {}))
    return ids, keys


def _model_prefix(row: ModelRecord) -> str | None:
    return row.source.get("prefix") if row.source.get("source") == "store" else None


def collect(session: Session, cutoff: datetime) -> tuple[Removed, list[str]]:
    """What is due, as (what to report, the store prefixes to delete). Deletes the rows (not committed)."""
    out, prefixes = Removed(), []
    # Lock the candidates, then read the live jobs: a submission that holds one (FOR SHARE) is skipped, and one
    # that committed before is among the live jobs.
    datasets = list(session.scalars(select(DatasetRecord).where(DatasetRecord.created_at < cutoff)
                                    .order_by(DatasetRecord.id).with_for_update(skip_locked=True)))
    models = list(session.scalars(select(ModelRecord).where(ModelRecord.created_at < cutoff)
                                  .order_by(ModelRecord.id).with_for_update(skip_locked=True)))
    live_ids, live_keys = _live_references(session)
    finished = select(Job.id).where(Job.status.not_in(LIVE), Job.finished_at.is_not(None),
                                    Job.finished_at < cutoff)
    out.jobs = list(session.scalars(finished))
    for art in session.scalars(select(Artifact).where(Artifact.job_id.in_(finished))):
        out.artifacts.append(art.path)
    session.execute(delete(Artifact).where(Artifact.job_id.in_(finished)))
    for ds in datasets:
        if ds.id in live_ids or ds.path in live_keys:
            continue
        out.datasets.append(ds.id)
        prefixes.append(ds.path)
        session.delete(ds)
    for mdl in models:
        prefix = _model_prefix(mdl)
        if prefix is None or mdl.id in live_ids or prefix.rstrip("/") in live_keys:
            continue  # references to hub, bundled or registered local models own no stored files
        out.models.append(mdl.id)
        prefixes.append(prefix)
        session.delete(mdl)
    return out, prefixes


def run_gc(settings: Settings, *, older_than_days: float | None = None, dry_run: bool = False) -> Removed:
    days = settings.retention_days if older_than_days is None else older_than_days
    cutoff = utcnow() - timedelta(days=days)
    store = get_store(settings)
    with session_scope(settings.sqlalchemy_url) as session:
        purged = purge_idempotency_keys(session)  # first: a write (on SQLite, the write lock; see above)
        removed, prefixes = collect(session, cutoff)
        removed.idempotency_keys = purged
        live_ids, _ = _live_references(session)
        keep_ids = live_ids | _upload_ids(session)
        registered = _registered_digests(session)
        if dry_run:
            session.rollback()
    if dry_run:
        removed.multipart = [key for key, _ in store.incomplete_uploads(utcnow() - STAGING_STALE)]
        removed.snapshots = _remove_orphan_snapshots(settings.data_dir / SNAPSHOTS, registered, dry_run=True)
        return removed
    for key in removed.artifacts:
        store.delete(key)
    for job_id in removed.jobs:  # the rest of jobs/<id>/: stage checkpoints a worker put there
        for key, _, _ in store.list(f"jobs/{job_id}/"):
            store.delete(key)
    for prefix in prefixes:
        for key, _, _ in store.list(prefix):
            store.delete(key)
            removed.objects.append(key)
    # Orphans: uploads whose id has no row (interrupted between the store and the commit), once old enough.
    for kind in ("datasets", "models"):
        for key, _, modified in store.list(f"uploads/{kind}/"):
            parts = key.split("/")
            if len(parts) > 3 and parts[2] not in keep_ids and _aware(modified) < cutoff:
                store.delete(key)
                removed.objects.append(key)
    _remove_local(settings, set(removed.jobs), prefixes)
    removed.staging = _remove_stale_staging(settings.data_dir / "uploads" / ".staging")
    removed.snapshots = _remove_orphan_snapshots(settings.data_dir / SNAPSHOTS, registered)
    # No upload runs for a day: an older one's process was killed mid-upload.
    removed.multipart = store.abort_incomplete_uploads(utcnow() - STAGING_STALE)
    return removed


def _registered_digests(session: Session) -> set[str]:
    """The digests of registered local folders: each one's verified copy (worker/engine/safe_files.py) stays."""
    rows = session.execute(select(ModelRecord.source, ModelRecord.sha256))
    return {digest for source, digest in rows if (source or {}).get("source") == "local" and digest}


def _remove_orphan_snapshots(snapshots: Path, registered: set[str], dry_run: bool = False) -> list[str]:
    """Verified copies whose digest no model row has any more (its folder was re-registered with other
    content, or its row deleted). Half-made copies (.part-*) are the snapshot code's to clear."""
    gone = []
    for entry in sorted(snapshots.iterdir()) if snapshots.is_dir() else []:
        if entry.name.startswith(".") or entry.name in registered or entry.is_symlink() or not entry.is_dir():
            continue
        if not dry_run:
            shutil.rmtree(entry, ignore_errors=True)
        gone.append(entry.name)
    return gone


def _remove_stale_staging(staging: Path) -> list[str]:
    """Partial uploads left by a killed API. Never visible (nothing serves .staging), only disk to reclaim."""
    gone = []
    cutoff = (utcnow() - STAGING_STALE).timestamp()
    for entry in sorted(staging.iterdir()) if staging.is_dir() else []:
        newest = max([entry.lstat().st_mtime, *(p.lstat().st_mtime for p in entry.rglob("*"))])
        if newest < cutoff:
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            gone.append(entry.name)
    return gone


def _upload_ids(session: Session) -> set[str]:
    return set(session.scalars(select(DatasetRecord.id))) | set(session.scalars(select(ModelRecord.id)))


def _remove_local(settings: Settings, job_ids: set[str], prefixes: list[str]) -> None:
    """This machine's copies: job directories (checkpoints) and cached uploads. Other workers' caches hold
    only immutable uploads; they are cleaned by running gc there, or simply by clearing data_dir/uploads."""
    for job_id in job_ids:
        shutil.rmtree(settings.jobs_dir / job_id, ignore_errors=True)
    for prefix in prefixes:
        parts = prefix.split("/")
        if len(parts) >= 3 and parts[0] == "uploads" and parts[2]:  # the upload's own uploads/<kind>/<id>/
            shutil.rmtree(settings.data_dir.joinpath(*parts[:3]), ignore_errors=True)
