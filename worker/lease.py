"""A worker's claim on a job: a compare-and-set UPDATE, a heartbeat that keeps it, and the flags that stop
the engine (cancel requested, lease lost, time limit, worker shutting down).

Every write is conditional (`WHERE lease_owner = me`, or on the states a claim may start from), so two
deliveries of one job id, or two workers, can never both run it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import Enum

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from app.db.base import session_scope, utcnow
from app.db.models import Job
from app.settings import Settings

log = logging.getLogger("distillery.worker")
ACTIVE = ("running", "cancelling")
# Set by the worker's shutdown signal (worker/tasks.py): the engine stops at its next step and the job is
# handed back, to be resumed by the next worker from its last finished stage.
SHUTDOWN = threading.Event()


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands timestamps back naive; they are UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Claim(Enum):
    CLAIMED = "claimed"
    EXHAUSTED = "exhausted"  # delivered max_attempts times already: failed, not run again
    CANCEL_FINALISED = "cancel_finalised"  # cancelling, its worker gone: now cancelled
    NOT_CLAIMABLE = "not_claimable"  # finished, cancelled, or leased by a live worker


def _claimable(now: datetime):
    expired = and_(Job.status.in_(ACTIVE), or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now))
    return and_(Job.cancel_requested.is_(False), or_(Job.status == "queued", expired))


def claim(session: Session, settings: Settings, job_id: str, owner: str) -> Claim:
    """One conditional UPDATE takes the job; the attempts cap is part of the condition, so a job that kills
    its worker every time is failed instead of delivered forever."""
    now = utcnow()
    taken = session.execute(
        update(Job)
        .where(Job.id == job_id, _claimable(now), Job.attempts < settings.max_attempts)
        .values(status="running", lease_owner=owner, lease_expires_at=now + timedelta(seconds=settings.lease_seconds),
                attempts=Job.attempts + 1, started_at=func.coalesce(Job.started_at, now))
        .execution_options(synchronize_session=False)
    ).rowcount
    if taken:
        return Claim.CLAIMED
    exhausted = session.execute(
        update(Job)
        .where(Job.id == job_id, _claimable(now), Job.attempts >= settings.max_attempts)
        .values(status="failed", failure_code="too_many_attempts",
                failure_message=f"the job was started {settings.max_attempts} times without finishing "
                                "(its worker stopped each time); it is not retried again",
                finished_at=now, lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    ).rowcount
    if exhausted:
        return Claim.EXHAUSTED
    abandoned = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "cancelling",
               or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now))
        .values(status="cancelled", finished_at=now, lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    ).rowcount
    return Claim.CANCEL_FINALISED if abandoned else Claim.NOT_CLAIMABLE


def release(session: Session, job_id: str, owner: str) -> bool:
    """Hand a job back (worker shutting down): the lease lapses now and the attempt is not counted, so the
    next claim resumes it at once and a restart never uses up a job's attempts."""
    return bool(session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == owner, Job.status.in_(ACTIVE))
        .values(lease_owner=None, lease_expires_at=utcnow() - timedelta(seconds=1), attempts=Job.attempts - 1)
        .execution_options(synchronize_session=False)
    ).rowcount)


class Lease:
    """The heartbeat: a daemon thread that extends the lease every lease_seconds/3 and polls the job about
    once a second for a cancel request, so that should_cancel() is a cheap read of flags."""

    def __init__(self, settings: Settings, job_id: str, owner: str,
                 on_hard_limit: Callable[[], None] | None = None) -> None:
        self.url, self.job_id, self.owner = settings.sqlalchemy_url, job_id, owner
        self.lease_s = settings.lease_seconds
        self.soft_s, self.hard_s = settings.job_soft_time_limit, settings.job_time_limit
        self.on_hard_limit = on_hard_limit or exit_now
        self.cancel_requested = threading.Event()
        self.lost = threading.Event()
        self.timed_out = threading.Event()
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{job_id}", daemon=True)

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def should_cancel(self) -> bool:
        return (self.cancel_requested.is_set() or self.lost.is_set() or self.timed_out.is_set()
                or SHUTDOWN.is_set())

    def _loop(self) -> None:
        tick = min(1.0, self.lease_s / 3)
        last_renew = last_ok = time.monotonic()
        while not self._stop.wait(tick):
            now = time.monotonic()
            try:
                if now - last_renew >= self.lease_s / 3:
                    last_renew = now
                    if not self._renew():
                        log.warning("job %s: lease lost; stopping", self.job_id)
                        self.lost.set()
                        return
                self._poll()
                last_ok = now
            except Exception as exc:  # the database is away: keep trying until the lease would have lapsed
                log.warning("job %s: heartbeat failed: %s", self.job_id, exc)
                if now - last_ok > self.lease_s:
                    self.lost.set()
                    return
            elapsed = now - self._started
            if elapsed > self.soft_s and not self.timed_out.is_set():
                log.warning("job %s: soft time limit (%ss) reached; stopping", self.job_id, self.soft_s)
                self.timed_out.set()
            if elapsed > self.hard_s:
                self.on_hard_limit()

    def _renew(self) -> bool:
        with session_scope(self.url) as session:
            return bool(session.execute(
                update(Job)
                .where(Job.id == self.job_id, Job.lease_owner == self.owner, Job.status.in_(ACTIVE))
                .values(lease_expires_at=utcnow() + timedelta(seconds=self.lease_s))
                .execution_options(synchronize_session=False)
            ).rowcount)

    def _poll(self) -> None:
        with session_scope(self.url) as session:
            row = session.execute(select(Job.cancel_requested, Job.status, Job.lease_owner)
                                  .where(Job.id == self.job_id)).first()
        if row is None or row.lease_owner != self.owner or row.status not in ACTIVE:
            self.lost.set()  # deleted, taken over, or finished by someone else: stop, write nothing
        elif row.cancel_requested:
            self.cancel_requested.set()


def exit_now() -> None:
    """The hard limit: the engine is stuck where it cannot check for cancellation. Only ending the process
    stops it; the caller has marked the job failed first, so its redelivery finds it finished."""
    log.error("hard time limit reached; ending the worker process")
    os._exit(70)
