"""Tasks by name."""

from __future__ import annotations

from ..errors import RecipeError
from .base import Task
from .causal_lm import CausalLM
from .classification import SequenceClassification
from .feature_extraction import FeatureExtraction

TASKS: dict[str, type[Task]] = {t.name: t for t in (FeatureExtraction, SequenceClassification, CausalLM)}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]()
    except KeyError:
        raise RecipeError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}", field="task") from None
