"""Distillery's compression engine: a pure library (torch, transformers, pydantic, stdlib).

    from worker.engine import load_recipe, run
    result = run(load_recipe("recipe.yaml"), "out/", base_dir=".", roots=["."])

Names are imported on first use, so that `worker.engine.recipe` (pydantic only) can be read by the API's
error handling and the CLI without loading torch.
"""

from __future__ import annotations

from importlib import import_module

_EXPORTS = {
    "load_artifact": "artifacts",
    "ProgressEvent": "context",
    "RunContext": "context",
    "EngineError": "errors",
    "Plan": "plan",
    "make_plan": "plan",
    "Recipe": "recipe",
    "load_recipe": "recipe",
    "parse_recipe": "recipe",
    "RunResult": "runner",
    "run": "runner",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
