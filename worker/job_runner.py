"""One delivery of one job: claim it, run the engine with its hooks wired to the database, record the
outcome and the files, let go of the lease.

The task (worker/tasks.py) only calls `run_job`. Everything here is safe to run twice for one job id:
the claim is a compare-and-set, finished stages are checkpointed under jobs/<id>/stages and resumed
(resume=True), and artifact rows are upserted by name.
"""

from __future__ import annotations

import gc
import logging
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db.base import session_scope, utcnow
from app.db.models import Event, Job, StageRun
from app.settings import Settings
from app.store import get_store, store_inputs
from worker import artifacts_out, checkpoints, input_cache, routing, stage_info
from worker.celery_app import clear_marker, enqueue_job
from worker.engine import EngineError, ProgressEvent, RunContext, RunResult, parse_recipe
from worker.engine import run as run_engine
from worker.engine.errors import Cancelled
from worker.engine.report import Shortfall, load_report
from worker.lease import ACTIVE, SHUTDOWN, Claim, Lease, aware, claim, exit_now, new_owner, release
from worker.oom import is_out_of_memory, out_of_memory_message
from worker.progress_db import JobProgress, LeaseLost, max_seq

log = logging.getLogger("distillery.worker")
HAND_BACK_PAUSE_S = 10.0


@dataclass
class Outcome:
    status: str  # succeeded | failed | cancelled
    code: str | None = None
    message: str | None = None
    result: RunResult | None = None


def _job_event(message: str) -> ProgressEvent:
    # The worker's own events use stage "job": the first says the attempt started, the last is the outcome.
    return ProgressEvent(stage="job", message=message)


def _set_stage_status(session: Session, job_id: str, status: str) -> None:
    """Stages interrupted mid-run take the job's outcome (failed or cancelled), or pending when handed back."""
    session.execute(update(StageRun).where(StageRun.job_id == job_id, StageRun.status == "running")
                    .values(status=status, finished_at=None if status == "pending" else utcnow()))


def run_job(settings: Settings, job_id: str, worker_name: str | None = None) -> str:
    """Returns what happened, for the worker's log: succeeded, failed, cancelled, released, lease_lost,
    handed_back (it needs a GPU this worker lacks), or the claim's outcome when nothing ran (not_claimable,
    exhausted, cancel_finalised). `worker_name` is the Celery node name, recorded with each stage."""
    try:
        clear_marker(settings, job_id)  # this message has arrived; the reconciler may send another later
    except Exception as exc:  # the marker only saves duplicate sends; never fail a job over it
        log.warning("job %s: could not clear the enqueue marker: %s", job_id, exc)
    owner, out_dir = new_owner(), settings.jobs_dir / job_id
    if _hand_back_without_cuda(settings, job_id, owner, out_dir):
        return "handed_back"
    with session_scope(settings.sqlalchemy_url) as session:
        claimed = claim(session, settings, job_id, owner)
        if claimed is Claim.EXHAUSTED or claimed is Claim.CANCEL_FINALISED:
            # finished by the claim itself; its last event goes in the same transaction, so that a reader who
            # sees the final status has every event already
            status = "failed: too_many_attempts" if claimed is Claim.EXHAUSTED else "cancelled"
            done = JobProgress(settings.sqlalchemy_url, job_id, owner, out_dir, seq=max_seq(session, job_id))
            done.write(session, [_job_event(status)], check_lease=False)
            _set_stage_status(session, job_id, "failed" if claimed is Claim.EXHAUSTED else "cancelled")
        job = session.get(Job, job_id) if claimed is Claim.CLAIMED else None
    if job is None:
        log.info("job %s: %s", job_id, claimed.value)
        return claimed.value
    progress = JobProgress(settings.sqlalchemy_url, job_id, owner, out_dir)

    log.info("job %s: claimed by %s (attempt %d)", job_id, owner, job.attempts)
    lease = Lease(settings, job_id, owner, on_hard_limit=lambda: _hard_limit(settings, job, progress))
    progress.on_lost = lease.lost.set
    progress.commit([_job_event(f"started (attempt {job.attempts})")], wait_for_db=settings.lease_seconds / 2)
    worker = stage_info.describe_worker(worker_name or owner)
    with lease:
        try:
            outcome = _execute(settings, job, out_dir, progress, lease, worker)
            progress.flush()
        finally:
            _free_memory()
    if lease.lost.is_set():
        # Keep out_dir: the worker that owns the job now may be a sibling process on this host, sharing data_dir
        # and running in this very directory. Re-reading the row first would still race with its claim. The
        # owner's own finish, or gc, removes the directory.
        log.warning("job %s: lease lost; another worker owns it now", job_id)
        return "lease_lost"
    if outcome is None:  # the worker is shutting down: hand the job back, to resume elsewhere
        ok = progress.commit([_job_event("interrupted: the worker is shutting down; the job resumes from its "
                                         "last finished stage on the next worker")],
                             extra=lambda s: _release(s, job_id, owner), check_lease=False)
        if ok:
            enqueue_job(settings, job_id, job.queue)
        return "released"
    if _finish(settings, job, out_dir, progress, outcome):
        _drop_local(settings, out_dir)
    return outcome.status


def _hand_back_without_cuda(settings: Settings, job_id: str, owner: str, out_dir: Path) -> bool:
    """A job that needs CUDA, delivered to a worker without it: leave the row as it is (no claim, so no attempt
    is used), say why in an event, stop taking that queue here and send the job back to it."""
    with session_scope(settings.sqlalchemy_url) as session:
        job = session.get(Job, job_id)
        if job is None or not routing.needs_cuda(job.recipe):
            return False
        if not routing.claimable(job.status, job.cancel_requested, job.lease_expires_at, utcnow()):
            return False  # finished, or run by another worker: the claim says so as usual
        queue = job.queue
        last = session.scalar(select(Event.message).where(Event.job_id == job_id).order_by(Event.seq.desc()).limit(1))
    if routing.cuda_available():
        return False
    message = routing.refusal()
    if last != message:  # outside the solo pool the job comes back every pause: say it once, not every 10 s
        JobProgress(settings.sqlalchemy_url, job_id, owner, out_dir).commit([_job_event(message)], check_lease=False)
        log.warning("job %s: %s", job_id, message)
    if not routing.stop_consuming(queue):  # before the send, so that this worker cannot take it again
        # Not a solo-pool worker (its consumer is in another process): it may get the job back, so pace the
        # round trips instead of spinning on them.
        time.sleep(HAND_BACK_PAUSE_S)
    enqueue_job(settings, job_id, queue)
    return True


def _drop_local(settings: Settings, out_dir: Path) -> None:
    """With a remote store a job's working directory (checkpoints, tars) is only a copy of what is stored: once
    the job is finished here, keeping it would only fill the worker's disk."""
    if settings.remote_store:
        shutil.rmtree(out_dir, ignore_errors=True)


def _execute(settings: Settings, job: Job, out_dir: Path, progress: JobProgress, lease: Lease,
             worker: dict) -> Outcome | None:
    roots = [settings.uploads_dir, *settings.model_roots]
    store = get_store(settings)
    ctx = RunContext(on_progress=progress, should_cancel=lease.should_cancel,
                     on_checkpoint=checkpoints.Uploader(store, settings.data_dir, worker))
    # With S3 this worker's copies of uploads are a bounded cache: this job's inputs are held (never evicted,
    # by any process on this machine) from before they are fetched until the run ends.
    keys = [key for key, _ in store_inputs(job.recipe)]
    held = input_cache.hold(settings.data_dir, keys) if settings.remote_store else nullcontext(set())
    try:
        with held as in_use:
            # Inputs held in the store (relative paths) are fetched into this worker's data_dir, the engine's
            # base_dir, and reused by later jobs; with the local store they are already there. So are the
            # checkpoints of stages an earlier attempt finished, possibly on another machine.
            cap = int(settings.worker_cache_max_gb * 1024**3) if settings.remote_store else 0
            input_cache.prepare(store, settings.data_dir, job.recipe, cap, in_use)  # evicts, then fetches
            checkpoints.fetch(store, settings.data_dir, out_dir)
            result = run_engine(parse_recipe(job.recipe), out_dir, base_dir=settings.data_dir, roots=roots,
                                ctx=ctx, resume=True)
    except Cancelled:
        result = None  # stopped before the stages began (the runner reports those as a cancelled result)
    except EngineError as exc:
        return Outcome("failed", exc.code, str(exc))
    except FileNotFoundError as exc:
        if exc.filename is not None:  # a local file the engine did not check: not a store key
            log.exception("job %s: internal error", job.id)
            return Outcome("failed", "internal_error", f"{type(exc).__name__}: {exc}")
        return Outcome("failed", "missing_input", f"an input is missing from the artifact store: {exc}")
    except SoftTimeLimitExceeded:  # Celery's own limit, under the prefork pool
        return Outcome("failed", "timeout", _timeout_message(settings))
    except Exception as exc:
        if is_out_of_memory(exc):
            log.warning("job %s: out of memory: %s", job.id, exc)
            return Outcome("failed", "out_of_memory", out_of_memory_message(exc))
        log.exception("job %s: internal error", job.id)
        return Outcome("failed", "internal_error", f"{type(exc).__name__}: {exc}")
    if result is not None and result.status == "succeeded":
        return Outcome("succeeded", result=result)
    if result is not None and result.status == "failed-gate":
        return Outcome("failed", "gate_failed", gate_message(result.report), result)
    # cancelled: say why the engine was stopped
    if lease.timed_out.is_set():
        return Outcome("failed", "timeout", _timeout_message(settings), result)
    if lease.cancel_requested.is_set() or lease.lost.is_set():
        return Outcome("cancelled", result=result)
    if SHUTDOWN.is_set():
        return None
    return Outcome("cancelled", result=result)


def _free_memory() -> None:
    """The worker process lives on to run the next job: give back what this one held (on its GPU too)."""
    gc.collect()
    import torch

    if torch.cuda.is_initialized():  # never initialises CUDA itself
        torch.cuda.empty_cache()


def _timeout_message(settings: Settings) -> str:
    return (f"the job ran past its time limit of {settings.job_soft_time_limit} s; finished stages are "
            "checkpointed")


def _shortfall_text(s: Shortfall) -> str:
    who = f"student {s.student}: " if s.student else ""
    short = f" (short by {s.short_by:.4f})" if s.short_by else ""
    if s.rule == "max_drop":  # in the metric's own points
        drop = "n/a" if s.drop is None else f"{s.drop:.4f}"
        return f"{who}task {s.task} lost {drop} of {s.metric}, allowed at most {s.required}{short}"
    kept = "n/a" if s.retention is None else f"{s.retention:.4f}"
    return f"{who}task {s.task} kept {kept} of the teacher's {s.metric}, needs {s.required}{short}"


def gate_message(data: dict) -> str:
    report = load_report(data)
    parts = [_shortfall_text(s) for s in report.shortfalls]
    if report.search is not None:
        effort = report.search.best_effort.id if report.search.best_effort else "none"
        return (f"no candidate of {report.search.trials_run} trials passed every gate; the best effort, {effort}: "
                + "; ".join(parts or ["see the report"]))
    if report.students is not None:
        ok = sorted((report.final.students if report.final else None) or {})
        return ("a student failed its quality gate: " + "; ".join(parts or ["see the report"])
                + (f"; passing students are still downloadable ({', '.join(ok)})" if ok else ""))
    stage = report.stages[-1] if report.stages else None
    label = f"{stage.index}:{stage.kind}" if stage else "a stage"
    best = report.final.stage_index if report.final else None
    kept_note = f"; the artifact is the last passing stage ({best})" if best is not None else "; no stage passed"
    return f"stage {label} failed its quality gate: " + "; ".join(parts or ["see the report"]) + kept_note


def _finish(settings: Settings, job: Job, out_dir: Path, progress: JobProgress, outcome: Outcome) -> bool:
    """Record the outcome and the files; True when it was committed (this worker still held the job)."""
    result = outcome.result
    files: list[artifacts_out.FileInfo] = []
    if result is not None:
        stage_info.rewrite_report(result.report, out_dir)  # which worker ran each stage, before hashing
        files = artifacts_out.collect(out_dir, settings.data_dir, aware(job.created_at),
                                      with_tar=result.artifact is not None, students=sorted(result.artifacts))
        # Into the store before the rows that name them are committed (a no-op for the local store).
        artifacts_out.publish(get_store(settings), settings.data_dir, files)
    now = utcnow()

    def finalise(session: Session) -> None:
        done = session.execute(
            update(Job).where(Job.id == job.id, Job.lease_owner == progress.owner, Job.status.in_(ACTIVE))
            .values(status=outcome.status, failure_code=outcome.code, failure_message=outcome.message,
                    report=result.report if result is not None else None, finished_at=now,
                    lease_owner=None, lease_expires_at=None)
            .execution_options(synchronize_session=False)
        ).rowcount
        if not done:
            raise LeaseLost(job.id)
        artifacts_out.record(session, job.id, job.owner, files)
        _set_stage_status(session, job.id, "cancelled" if outcome.status == "cancelled" else "failed")

    message = outcome.status + (f": {outcome.code}: {outcome.message}" if outcome.code else "")
    done = progress.commit([_job_event(message)], extra=finalise, check_lease=False,
                           wait_for_db=settings.lease_seconds / 2)
    if done:
        log.info("job %s: %s", job.id, message)
    return done


def _release(session: Session, job_id: str, owner: str) -> None:
    if not release(session, job_id, owner):
        raise LeaseLost(job_id)
    _set_stage_status(session, job_id, "pending")


def _hard_limit(settings: Settings, job: Job, progress: JobProgress) -> None:
    """Called from the heartbeat thread past job_time_limit: record the timeout, then end the process."""
    try:
        _finish(settings, job, settings.jobs_dir / job.id, progress,
                Outcome("failed", "timeout", f"the job was stopped at its hard time limit of "
                                             f"{settings.job_time_limit} s"))
    finally:
        exit_now()

