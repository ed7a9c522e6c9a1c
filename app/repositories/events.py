"""SQL for a job's progress events. Events carry no owner of their own: every query joins the job and
filters on its owner."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db.models import Event, Job


def events_after(session: Session, owner: str, job_id: str, after: int, limit: int) -> list[Event]:
    """Up to `limit` events with seq > after, oldest first."""
    stmt = (
        select(Event)
        .join(Job, Job.id == Event.job_id)
        .where(Job.owner == owner, Event.job_id == job_id, Event.seq > after)
        .order_by(Event.seq)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def job_status(session: Session, owner: str, job_id: str) -> str | None:
    return session.scalars(select(Job.status).where(Job.id == job_id, Job.owner == owner)).first()
