"""Distillery's compression engine: a pure library (torch, transformers, pydantic, stdlib).

    from worker.engine import load_recipe, run
    result = run(load_recipe("recipe.yaml"), "out/", base_dir=".", roots=["."])
"""

from .artifacts import load_artifact
from .context import ProgressEvent, RunContext
from .errors import EngineError
from .plan import Plan, make_plan
from .recipe import Recipe, load_recipe, parse_recipe
from .runner import RunResult, run

__all__ = [
    "EngineError",
    "Plan",
    "ProgressEvent",
    "Recipe",
    "RunContext",
    "RunResult",
    "load_artifact",
    "load_recipe",
    "make_plan",
    "parse_recipe",
    "run",
]
