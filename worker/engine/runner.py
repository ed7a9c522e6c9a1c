"""`run`: the dry run (make_plan), then the run mode that fits the recipe (run_modes.py): a search over a space
of students, one student per task, or the single run through the stages."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from .context import RunContext
from .layout import RunLayout
from .plan import make_plan
from .recipe import Recipe
from .run_common import RunResult
from .run_modes import load_builtin_modes, mode_for

__all__ = ["RunResult", "run"]


def run(
    recipe: Recipe,
    out_dir: str | Path,
    *,
    base_dir: str | Path = ".",
    roots: Sequence[str | Path] = (),
    ctx: RunContext | None = None,
    resume: bool = False,
) -> RunResult:
    """Plan (the dry run), then run the mode the plan calls for."""
    ctx = ctx or RunContext()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work_dir = RunLayout(out_dir).work
    plan = make_plan(recipe, base_dir=Path(base_dir), roots=[Path(r) for r in roots], work_dir=work_dir)
    load_builtin_modes()
    try:
        return mode_for(plan).run(plan, out_dir, ctx, resume)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
