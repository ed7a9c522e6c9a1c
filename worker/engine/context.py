"""The hooks a caller hands to the engine: progress reporting and cooperative cancellation."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .errors import Cancelled


@dataclass(frozen=True)
class StageBoundary:
    """A stage starting, resumed from its checkpoint, or finished, as data: the worker records stage rows from
    this, never from the message text. `row` (the stage's report entry) and `directory` (its checkpoint) come
    with resumed and finished stages, handed over in memory."""

    index: int
    kind: str
    phase: Literal["started", "resumed", "finished"]
    row: dict | None = None
    directory: Path | None = None


@dataclass(frozen=True)
class ProgressEvent:
    stage: str  # e.g. "teacher", "0:distill", "final"
    message: str
    step: int | None = None
    total: int | None = None
    loss: float | None = None
    time: float = field(default_factory=time.time)
    boundary: StageBoundary | None = None
    scope: str = ""  # "students/topics" for a run inside a run; "" for the job's own stages

    def to_dict(self) -> dict:
        """The event as the API shows it (the typed boundary is for the worker)."""
        return {k: getattr(self, k) for k in ("stage", "message", "step", "total", "loss", "time")
                if getattr(self, k) is not None}


def _no_progress(event: ProgressEvent) -> None:
    return None


def _never_cancel() -> bool:
    return False


def _no_checkpoint(path: Path) -> None:
    return None


@dataclass
class RunContext:
    """What the engine needs from its caller. The worker wires these to the database; the CLI to a bar."""

    on_progress: Callable[[ProgressEvent], None] = _no_progress
    should_cancel: Callable[[], bool] = _never_cancel
    # Called with a directory once the engine has finished writing a checkpoint there (its marker file
    # written last), so the worker can copy it to a store other machines resume from.
    on_checkpoint: Callable[[Path], None] = _no_checkpoint

    def progress(self, stage: str, message: str, **kw) -> None:
        self.on_progress(ProgressEvent(stage=stage, message=message, **kw))

    def checkpoint(self, path: Path) -> None:
        self.on_checkpoint(path)

    def scoped(self, prefix: str) -> RunContext:
        """The same hooks, with event stages prefixed ("students/topics/0:distill"), for a run inside a run."""
        outer = self.on_progress

        def on_progress(event: ProgressEvent) -> None:
            scope = f"{prefix}/{event.scope}" if event.scope else prefix
            outer(dataclasses.replace(event, stage=f"{prefix}/{event.stage}", scope=scope))

        return RunContext(on_progress=on_progress, should_cancel=self.should_cancel, on_checkpoint=self.on_checkpoint)

    def check_cancel(self) -> None:
        """Called between steps; raises Cancelled so the runner can stop cleanly."""
        if self.should_cancel():
            raise Cancelled("the run was cancelled")
