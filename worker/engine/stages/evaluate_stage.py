"""`evaluate` as a stage: re-measure the current candidate with its own settings (the runner does the
measuring; this class exists so the kind is registered and validated like any other)."""

from __future__ import annotations

from ..candidate import Candidate
from ..context import RunContext
from ..memory import FP32, MemoryInputs, parameters
from ..recipe import EvaluateConfig
from .base import Stage, StageEnv, register


@register(EvaluateConfig)
class Evaluate(Stage):
    transforms_model = False

    def run(self, candidate: Candidate, env: StageEnv, ctx: RunContext) -> Candidate:
        return candidate  # evaluation leaves the model as it is

    def memory_parts(self, m: MemoryInputs) -> dict[str, int]:
        return {"candidate weights, measured and reloaded": 2 * FP32 * parameters(m.before)}
