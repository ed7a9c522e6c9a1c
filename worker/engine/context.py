"""The hooks a caller hands to the engine: progress reporting and cooperative cancellation."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from .errors import Cancelled


@dataclass(frozen=True)
class ProgressEvent:
    stage: str  # e.g. "teacher", "0:distill", "final"
    message: str
    step: int | None = None
    total: int | None = None
    loss: float | None = None
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _no_progress(event: ProgressEvent) -> None:
    return None


def _never_cancel() -> bool:
    return False


@dataclass
class RunContext:
    """What the engine needs from its caller. The worker wires these to the database; the CLI to a bar."""

    on_progress: Callable[[ProgressEvent], None] = _no_progress
    should_cancel: Callable[[], bool] = _never_cancel

    def progress(self, stage: str, message: str, **kw) -> None:
        self.on_progress(ProgressEvent(stage=stage, message=message, **kw))

    def check_cancel(self) -> None:
        """Called between steps; raises Cancelled so the runner can stop cleanly."""
        if self.should_cancel():
            raise Cancelled("the run was cancelled")
