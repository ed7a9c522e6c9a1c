"""Uploaded datasets."""

from __future__ import annotations

from sqlalchemy.orm import Session

from ..db.models import DatasetRecord
from .owned import get_owned, page_owned


def add_dataset(session: Session, *, id: str, owner: str, name: str, path: str, kind: str, rows: int,
                columns: list[str], size_bytes: int, sha256: str) -> DatasetRecord:
    row = DatasetRecord(id=id, owner=owner, name=name, path=path, kind=kind, rows=rows, columns=columns,
                        size_bytes=size_bytes, sha256=sha256)
    session.add(row)
    session.flush()
    return row


def get_dataset(session: Session, owner: str, dataset_id: str) -> DatasetRecord | None:
    return get_owned(session, DatasetRecord, owner, dataset_id)


def list_datasets(session: Session, owner: str, after: str | None,
                  limit: int) -> tuple[list[DatasetRecord], bool]:
    return page_owned(session, DatasetRecord, owner, after, limit)
