"""Registered teacher models."""

from __future__ import annotations

from sqlalchemy.orm import Session

from ..db.models import ModelRecord
from .owned import get_owned, page_owned


def add_model(session: Session, *, id: str, owner: str, name: str, source: dict, size_bytes: int | None,
              sha256: str | None) -> ModelRecord:
    row = ModelRecord(id=id, owner=owner, name=name, source=source, size_bytes=size_bytes, sha256=sha256)
    session.add(row)
    session.flush()
    return row


def get_model(session: Session, owner: str, model_id: str) -> ModelRecord | None:
    return get_owned(session, ModelRecord, owner, model_id)


def list_models(session: Session, owner: str, after: str | None, limit: int) -> tuple[list[ModelRecord], bool]:
    return page_owned(session, ModelRecord, owner, after, limit)
