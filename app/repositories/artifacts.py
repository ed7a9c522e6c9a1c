"""Artifacts of finished jobs (the worker writes the rows; the API only reads them)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from ..db.models import Artifact, Job
from .owned import get_owned, page_owned


def get_artifact(session: Session, owner: str, artifact_id: str) -> Artifact | None:
    return get_owned(session, Artifact, owner, artifact_id)


def list_job_artifacts(session: Session, owner: str, job_id: str, after: str | None,
                       limit: int) -> tuple[list[Artifact], bool] | None:
    """None when the job is not the owner's (so the caller answers 404, as for any other object)."""
    if get_owned(session, Job, owner, job_id) is None:
        return None
    return page_owned(session, Artifact, owner, after, limit, Artifact.job_id == job_id)
