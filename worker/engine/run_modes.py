"""Run modes, registered by name: each says which plans it runs (`applies`) and runs them. The first mode
that applies, by priority (lowest first), runs the plan; "single" (priority 100) takes whatever is left.

A new mode is one module that calls register_run_mode, imported by load_builtin_modes (or by its user)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .context import RunContext
    from .plan import Plan
    from .run_common import RunResult


@dataclass(frozen=True)
class RunMode:
    name: str
    applies: Callable[[Plan], bool]
    run: Callable[[Plan, Path, RunContext, bool], RunResult]  # (plan, out_dir, ctx, resume)
    priority: int


_MODES: dict[str, RunMode] = {}


def register_run_mode(name: str, applies: Callable, run: Callable, priority: int = 50) -> None:
    _MODES[name] = RunMode(name, applies, run, priority)


def unregister_run_mode(name: str) -> None:
    _MODES.pop(name, None)


def load_builtin_modes() -> None:
    from . import search_run, single_run, students  # noqa: F401  each registers its mode on import


def mode_for(plan: Plan) -> RunMode:
    for mode in sorted(_MODES.values(), key=lambda m: m.priority):
        if mode.applies(plan):
            return mode
    raise LookupError("no run mode applies to this plan")  # unreachable while "single" is registered
