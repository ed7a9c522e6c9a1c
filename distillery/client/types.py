"""What the API returns, as pydantic models. Fields the service adds later are kept (extra="allow"), so an
older client keeps working against a newer service; `model_dump()` gives the JSON object back."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Progress(_Out):
    stage: str | None = None
    step: int | None = None
    total: int | None = None
    loss: float | None = None


class Stage(_Out):
    index: int
    kind: str
    status: str  # pending | running | passed | failed-gate
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None


class Failure(_Out):
    code: str | None = None  # gate_failed, timeout, too_many_attempts, invalid_data, internal_error...
    message: str | None = None


class Job(_Out):
    """A job: `status` is queued, running, cancelling, succeeded, failed or cancelled."""

    id: str
    status: str
    queue: str
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    current_stage: str | None = None
    progress: Progress | None = None
    attempts: int = 0
    stages: list[Stage] = []
    failure: Failure | None = None
    request: dict[str, Any] = {}
    links: dict[str, str] = {}

    @property
    def finished(self) -> bool:
        """True once the job is terminal (succeeded, failed or cancelled): it will not change again."""
        return self.status in TERMINAL


class Event(_Out):
    """One progress event; `seq` counts 1, 2, 3... per job."""

    seq: int
    time: datetime
    stage: str
    message: str
    step: int | None = None
    total: int | None = None
    loss: float | None = None


class Model(_Out):
    id: str
    name: str
    source: dict[str, Any]
    size_bytes: int | None = None
    sha256: str | None = None
    created_at: datetime


class Dataset(_Out):
    id: str
    name: str
    kind: str  # text | classification | similarity
    rows: int
    columns: list[str]
    size_bytes: int
    sha256: str
    created_at: datetime


class Artifact(_Out):
    """A file a job produced: `sha256` is also the download's strong ETag."""

    id: str
    name: str
    media_type: str
    size_bytes: int
    sha256: str
    download_url: str
    created_at: datetime | None = None
