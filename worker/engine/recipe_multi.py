"""Recipe fields for several tasks (`tasks`, `strategy`) and for accuracy-aware search (`search`).

Kept apart from recipe.py so each module stays short; recipe.Recipe holds these as optional fields, and a
recipe with neither runs (and reports) exactly as before.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .fields import MAX_ITEMS, LayerCount, Strict, UserPath
from .quantization import NO_QUANTIZATION, get_method
from .quantization.registry import SearchMethodName

TASK_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,23}$"  # also a directory name and part of event labels (64 chars)


class TaskSpec(Strict):
    """One task of a multi-task job: its own transfer data, eval data and gate."""

    train: UserPath = Field(description="transfer/training data for this task: a JSONL or CSV file (a dataset id "
                                        "in a job)")
    eval: UserPath = Field(description="eval data for this task (a dataset id in a job)")
    gate: float | None = Field(None, gt=0, le=2, description="min retention; default gates.per_task / min_retention")
    weight: float | None = Field(None, gt=0, description="shared student: this task's share of the loss; "
                                                         "default proportional to its training examples")


Strategy = Literal["per-task", "shared", "both"]

# Quantization choices of a search; "none" keeps the float student.
SearchQuant = SearchMethodName  # a registered quantization method, or "none"
SearchPrune = Literal["neurons", "heads-and-neurons", "magnitude"]


class SearchSpace(Strict):
    # each axis is short: the grid is their product
    depth: list[LayerCount] = Field(min_length=1, max_length=MAX_ITEMS, description="student layers to try")
    sparsity: list[Annotated[float, Field(ge=0, lt=1)]] = Field(
        default_factory=lambda: [0.0], min_length=1, max_length=MAX_ITEMS,
        description="fractions to prune; 0 = not pruned")
    quantization: list[SearchQuant] = Field(default_factory=lambda: ["none"], min_length=1, max_length=MAX_ITEMS)
    embeddings: list[Literal["keep", "int8"]] = Field(
        default_factory=lambda: ["keep"], min_length=1, description="int8 embeddings (with int8-dynamic only)")

    @model_validator(mode="after")
    def _distinct(self) -> SearchSpace:
        for name in ("depth", "sparsity", "quantization", "embeddings"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"{name} lists a value twice")
        if "int8" in self.embeddings and not any(q != NO_QUANTIZATION and get_method(q).int8_embeddings
                                                  for q in self.quantization):
            raise ValueError("embeddings int8 goes with a quantization that quantizes the embedding table "
                             "(int8-dynamic), which the space does not list")
        return self


class Objective(Strict):
    """What "best" means among the candidates that pass every gate."""

    minimize: Literal["size", "latency", "mix"] = "size"
    batch: int = Field(1, ge=1, le=4096, description="latency: batch size of the request measured")
    size_weight: float = Field(0.5, ge=0, le=1, description="mix: weight of size relative to the teacher's; "
                                                            "latency gets 1 - size_weight")
    latency_tolerance: float = Field(0.05, ge=0, le=1, description="latency is noisy: candidates predicted "
                                     "within this fraction of the best are still tried")


class SearchConfig(Strict):
    space: SearchSpace
    objective: Objective = Field(default_factory=Objective)
    prune: SearchPrune = Field("neurons", description="what sparsity removes: feed-forward neurons (structured, "
                               "smaller and faster), heads and neurons, or magnitude zeros (no smaller on disk)")
    max_trials: int | None = Field(None, ge=1, le=100_000, description="stop after this many trials")
    time_budget_s: float | None = Field(None, gt=0, description="stop starting trials after this many seconds")
    exhaustive: bool = Field(False, description="evaluate every point of the grid (for comparison)")
