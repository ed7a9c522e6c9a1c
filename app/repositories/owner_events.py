"""SQL for the owner-wide event feed: every job's events for one owner, in event-id order.

Events carry no owner of their own: the query joins the job and filters on its owner, so another
owner's events never come back.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..db.models import Event, Job


def owner_events_after(session: Session, owner: str, after: int, limit: int) -> list[Event]:
    """Up to `limit` of the owner's events with id > after, in id order."""
    stmt = (
        select(Event)
        .join(Job, Job.id == Event.job_id)
        .where(Job.owner == owner, Event.id > after)
        .order_by(Event.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def newest_event_id(session: Session) -> int:
    """The highest event id of any owner (the primary key's end: one index probe). A stream that starts
    here sends only what comes next; it reveals nothing, since ids carry no owner."""
    return session.scalar(select(func.coalesce(func.max(Event.id), 0))) or 0
