"""The engine's progress, written to the database: Event rows (seq 1, 2, 3... per job), the job's current
stage and last progress, and the StageRun rows.

Writes are batched: stage boundaries and other messages are written at once, while a fast stream of
training steps is coalesced (the latest step of a phase replaces the one before it in the batch) and
written at most every FLUSH_S seconds, so a job at thousands of steps a second costs two small
transactions a second and the event log stays readable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from app.db.base import session_scope
from app.db.models import Event, Job, StageRun
from worker.engine.context import ProgressEvent, StageBoundary
from worker.stage_info import read as read_worker

log = logging.getLogger("distillery.worker")
FLUSH_S = 0.5
METRIC_KEYS = ("duration_s", "details", "evaluation", "gate", "reload_max_abs_diff")


def event_time(ev: ProgressEvent) -> datetime:
    return datetime.fromtimestamp(ev.time, UTC)


def max_seq(session: Session, job_id: str) -> int:
    return session.scalar(select(func.coalesce(func.max(Event.seq), 0)).where(Event.job_id == job_id)) or 0


class LeaseLost(Exception):
    """The job's row no longer names this worker as its lease owner: write nothing more."""


class JobProgress:
    """A RunContext.on_progress for one job and one lease owner. Thread-safe."""

    def __init__(self, url: str, job_id: str, owner: str, out_dir: Path,
                 on_lost: Callable[[], None] = lambda: None, seq: int | None = None) -> None:
        self.url, self.job_id, self.owner, self.out_dir = url, job_id, owner, out_dir
        self.on_lost = on_lost
        self.pending: list[ProgressEvent] = []
        self.resumed: set[int] = set()
        self.last_flush = 0.0
        self.lock = threading.Lock()
        # A per-process counter, started from the stored maximum so a redelivered job continues the
        # sequence; a collision (someone else appended) re-reads it and retries.
        if seq is None:
            with session_scope(url) as session:
                seq = max_seq(session, job_id)
        self.seq = seq

    def __call__(self, event: ProgressEvent) -> None:
        with self.lock:
            stepping = event.total is not None
            last = self.pending[-1] if self.pending else None
            if (stepping and last is not None and last.total is not None
                    and (last.stage, last.message) == (event.stage, event.message)):
                self.pending[-1] = event
            else:
                self.pending.append(event)
            if not stepping or time.monotonic() - self.last_flush >= FLUSH_S:
                self._flush()

    def flush(self) -> None:
        with self.lock:
            self._flush()

    def write(self, session: Session, events: list[ProgressEvent], *, check_lease: bool = True) -> None:
        """Append events (and their effects on the job and its stages) inside the caller's transaction."""
        if not events:
            return
        last = events[-1]
        if check_lease:
            owned = session.execute(
                update(Job).where(Job.id == self.job_id, Job.lease_owner == self.owner)
                .values(current_stage=last.stage[:64], progress=last.to_dict())
                .execution_options(synchronize_session=False)
            ).rowcount
            if not owned:
                raise LeaseLost(self.job_id)
        for offset, ev in enumerate(events, start=1):
            session.add(Event(job_id=self.job_id, seq=self.seq + offset, created_at=event_time(ev),
                              stage=ev.stage[:64], message=ev.message, step=ev.step, total=ev.total,
                              loss=None if ev.loss is None else float(ev.loss)))
            if ev.total is None:
                self._stage_row(session, ev)
        session.flush()  # a seq collision surfaces here, inside the retry loop

    def commit(self, events: list[ProgressEvent], extra: Callable[[Session], None] | None = None,
               *, check_lease: bool = True, wait_for_db: float = 0.0) -> bool:
        """Write events (and run `extra` in the same transaction); retry on a seq collision. False when the
        lease was lost. With `wait_for_db`, a database that cannot be reached is retried with backoff for that
        many seconds (the writes that open and close a job must not be lost to a blip)."""
        deadline, delay, collisions = time.monotonic() + wait_for_db, 0.25, 0
        while True:
            try:
                with session_scope(self.url) as session:
                    self.write(session, events, check_lease=check_lease)
                    if extra is not None:
                        extra(session)
                self.seq += len(events)
                return True
            except LeaseLost:
                self.on_lost()
                return False
            except IntegrityError:
                collisions += 1
                if collisions == 5:
                    raise
                with session_scope(self.url) as session:
                    self.seq = max_seq(session, self.job_id)
            except OperationalError as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("job %s: database unavailable, retrying in %.1f s: %s", self.job_id, delay, exc.orig)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _flush(self) -> None:
        self.last_flush = time.monotonic()
        if not self.pending:
            return
        try:
            self.commit(self.pending)
        except SQLAlchemyError as exc:
            # A database blip must not fail the run: keep the events and try again at the next flush. If the
            # database stays away, the heartbeat gives the lease up and the engine stops.
            log.warning("job %s: progress not written yet: %s", self.job_id, exc)
            return
        self.pending = []

    def _stage_row(self, session: Session, ev: ProgressEvent) -> None:
        boundary = ev.boundary
        if boundary is None or ev.scope:  # a student's stages (a run inside the run) have no rows of their own
            return
        index, kind = boundary.index, boundary.kind
        row = session.scalars(select(StageRun).where(StageRun.job_id == self.job_id, StageRun.index == index)).first()
        if row is None:  # a job inserted without its stage rows: create them as they start
            row = StageRun(job_id=self.job_id, index=index, kind=kind, status="pending")
            session.add(row)
        at = event_time(ev)
        if boundary.phase == "started":
            row.status, row.started_at, row.finished_at, row.metrics = "running", at, None, None
        elif boundary.phase == "resumed":
            self.resumed.add(index)  # keep the timings of the attempt that ran it
        elif boundary.phase == "finished" and boundary.row is not None:
            row.status = boundary.row["status"]
            if index not in self.resumed or row.finished_at is None:
                row.finished_at = at
            row.metrics = self._metrics(boundary)

    def _metrics(self, boundary: StageBoundary) -> dict:
        stage = boundary.row or {}
        metrics = {k: stage.get(k) for k in METRIC_KEYS}
        metrics["resumed"] = boundary.index in self.resumed
        metrics["device"] = stage.get("device")
        # the worker that ran it (an earlier one, when resumed): the worker's own file in the checkpoint
        metrics["worker"] = read_worker(boundary.directory) if boundary.directory is not None else None
        return metrics
