"""Stage behaviour, registered against the stage's config class (torchao's handler pattern).

A stage has three methods: `validate` (the dry run: check the config against the model and the
environment, without loading weights), `run`, and `describe` (what it did, for the report).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from pydantic import BaseModel

from ..architecture import ModelInfo
from ..candidate import Candidate
from ..context import RunContext
from ..data import Dataset
from ..errors import RecipeError
from ..memory import MemoryInputs
from ..tasks.base import Task


@dataclass
class StageEnv:
    """Everything a stage may use besides the candidate itself."""

    task: Task
    device: torch.device
    seed: int
    max_length: int
    train: Dataset | None = None
    eval: dict[str, Dataset] = field(default_factory=dict)
    teacher: Candidate | None = None
    work_dir: Path | None = None
    base_dir: Path = Path(".")
    roots: list[Path] = field(default_factory=list)
    # A shared student's mixed training set: (task, start, stop, weight) spans, for the weighted loss
    train_groups: tuple = ()


class Stage(ABC):
    config_type: ClassVar[type[BaseModel]]
    requires_train_data: ClassVar[bool] = False  # capability flag, as llm-compressor's modifiers have
    transforms_model: ClassVar[bool] = True  # False for a stage that only measures (evaluate)
    last_transform: ClassVar[bool] = False  # no stage that transforms the model may follow this one (quantize)

    def __init__(self, config: BaseModel, index: int) -> None:
        self.config = config
        self.index = index
        self.details: dict = {}

    @property
    def field(self) -> str:
        return f"stages.{self.index}"

    @property
    def label(self) -> str:
        return f"{self.index}:{self.config.kind}"

    def validate(self, info: ModelInfo, env: StageEnv) -> ModelInfo:
        """Dry run: raise StageError naming the field if this stage cannot run; return the model info
        after the stage, so later stages are checked against the shape they will see."""
        return info

    @abstractmethod
    def run(self, candidate: Candidate, env: StageEnv, ctx: RunContext) -> Candidate: ...

    @abstractmethod
    def memory_parts(self, m: MemoryInputs) -> dict[str, int]:
        """What the stage holds in memory at its peak, in bytes by what it is (the submit-time estimate,
        memory.py); the teacher's weights are added for it."""

    def describe(self) -> dict:
        return {"kind": self.config.kind, "config": self.config.model_dump(mode="json"), **self.details}


_REGISTRY: dict[type[BaseModel], type[Stage]] = {}


def register(config_type: type[BaseModel]):
    def wrap(cls: type[Stage]) -> type[Stage]:
        cls.config_type = config_type
        _REGISTRY[config_type] = cls
        return cls

    return wrap


def unregister(config_type: type[BaseModel]) -> None:
    _REGISTRY.pop(config_type, None)


def build_stage(config: BaseModel, index: int) -> Stage:
    try:
        return _REGISTRY[type(config)](config, index)
    except KeyError:
        raise RecipeError(f"no stage is registered for {type(config).__name__}", field=f"stages.{index}") from None
