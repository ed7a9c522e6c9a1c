"""Queries shared by the owner-scoped tables: fetch one, and one page in id order (ids sort by time)."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

T = TypeVar("T")


def get_owned(session: Session, model: type[T], owner: str, object_id: str) -> T | None:
    m: Any = model
    return session.scalars(select(m).where(m.id == object_id, m.owner == owner)).first()


def page_owned(session: Session, model: type[T], owner: str, after: str | None, limit: int,
               *where: ColumnElement[bool]) -> tuple[list[T], bool]:
    """Up to `limit` rows after the id `after`, and whether more follow (one extra row is fetched)."""
    m: Any = model
    stmt = select(m).where(m.owner == owner, *where)
    if after is not None:
        stmt = stmt.where(m.id > after)
    rows = list(session.scalars(stmt.order_by(m.id).limit(limit + 1)))
    return rows[:limit], len(rows) > limit
