"""SQL for jobs, their stage rows and idempotency keys. Every query filters by owner: another owner's job
is simply not found."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import case, delete, select, update
from sqlalchemy.orm import Session, joinedload

from ..db.base import utcnow
from ..db.models import IdempotencyKey, Job, StageRun

STATES = ("queued", "running", "cancelling", "succeeded", "failed", "cancelled")
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
CANCELLABLE = ("queued", "running", "cancelling")
# As long as a client retries a submission; after that the key is free again (Stripe keeps keys 24 hours).
IDEMPOTENCY_TTL = timedelta(hours=24)


def get_job(session: Session, owner: str, job_id: str, *, fresh: bool = False) -> Job | None:
    # one round trip: the stage rows come joined, not in a second SELECT (status polling is the hot path)
    stmt = select(Job).options(joinedload(Job.stages)).where(Job.id == job_id, Job.owner == owner)
    if fresh:  # after a bulk UPDATE, the identity map may hold the old row
        stmt = stmt.execution_options(populate_existing=True)
    return session.scalars(stmt).unique().first()


def list_jobs(session: Session, owner: str, *, before_id: str | None, limit: int,
              statuses: Sequence[str] = (), created_after: datetime | None = None,
              created_before: datetime | None = None) -> list[Job]:
    """Newest first (ids sort by creation time); up to `limit` rows after the cursor."""
    stmt = select(Job).where(Job.owner == owner)
    if before_id:
        stmt = stmt.where(Job.id < before_id)
    if statuses:
        stmt = stmt.where(Job.status.in_(list(statuses)))
    if created_after is not None:
        stmt = stmt.where(Job.created_at >= created_after)
    if created_before is not None:
        stmt = stmt.where(Job.created_at < created_before)
    return list(session.scalars(stmt.order_by(Job.id.desc()).limit(limit)))


def request_cancel(session: Session, owner: str, job_id: str) -> bool:
    """One compare-and-set UPDATE, so it cannot interleave with the worker's claim (which takes only
    status='queued' rows): a queued job becomes cancelled and is never started; a running one becomes
    cancelling and the worker stops at its next step. Returns False when nothing was cancellable."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.owner == owner, Job.status.in_(CANCELLABLE))
        .values(
            status=case((Job.status == "queued", "cancelled"), else_="cancelling"),
            finished_at=case((Job.status == "queued", utcnow()), else_=Job.finished_at),
            cancel_requested=True,
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def get_idempotency_key(session: Session, owner: str, key: str) -> IdempotencyKey | None:
    """The key's record while it is live. An expired one is deleted here (flushed), so the same key then
    makes a new job instead of replaying, or refusing a new body for, one from days ago."""
    stmt = select(IdempotencyKey).where(IdempotencyKey.owner == owner, IdempotencyKey.key == key)
    row = session.scalars(stmt).first()
    if row is not None and row.created_at < utcnow() - IDEMPOTENCY_TTL:
        session.delete(row)
        session.flush()
        return None
    return row


def purge_idempotency_keys(session: Session) -> int:
    """Delete every expired key (distillery gc): the table stays as small as a day of submissions."""
    result = session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < utcnow() - IDEMPOTENCY_TTL))
    return result.rowcount or 0


def create_job(session: Session, *, job_id: str, owner: str, queue: str, request: dict, recipe: dict,
               stage_kinds: Sequence[str], idempotency: tuple[str, str] | None) -> Job:
    """Add a queued job, a pending row per stage and, given (key, request hash), its idempotency key.
    Flushed, not committed: the caller commits, then enqueues."""
    job = Job(id=job_id, owner=owner, status="queued", queue=queue, request=request, recipe=recipe,
              cancel_requested=False, attempts=0, created_at=utcnow(),
              stages=[StageRun(index=i, kind=kind, status="pending") for i, kind in enumerate(stage_kinds)])
    session.add(job)
    session.flush()  # the job row first: the idempotency key refers to it
    if idempotency is not None:
        key, request_hash = idempotency
        session.add(IdempotencyKey(owner=owner, key=key, request_hash=request_hash, job_id=job_id))
        session.flush()
    return job
