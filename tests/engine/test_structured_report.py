"""What structured pruning reports: the fraction of heads and neurons removed, per layer and overall, and the
reduction in parameters it achieved."""

from __future__ import annotations

import pytest
from transformers import AutoModel, AutoModelForCausalLM

from worker.engine.candidate import Candidate
from worker.engine.context import RunContext
from worker.engine.recipe import PruneStructuredConfig
from worker.engine.stages.structured import StructuredPrune
from worker.engine.tasks import get_task


def _prune(model, task: str, **cfg) -> tuple[dict, int]:
    stage = StructuredPrune(PruneStructuredConfig(kind="prune", method="structured", **cfg), 0)
    out = stage.run(Candidate(model, None, get_task(task)), None, RunContext())
    return stage.details, sum(p.numel() for p in out.model.parameters())


@pytest.mark.parametrize("which", ["bert", "gpt2"])
def test_removed_fractions_and_parameter_reduction(which, tiny_bert, tiny_gpt2):
    model = (AutoModel.from_pretrained(tiny_bert) if which == "bert"
             else AutoModelForCausalLM.from_pretrained(tiny_gpt2))
    before = sum(p.numel() for p in model.parameters())
    # 4 heads: removing 30 % rounds to one head (25 %); 64 neurons (GPT-2: 128): half go
    details, after = _prune(model, "feature-extraction" if which == "bert" else "causal-lm", heads=0.3, neurons=0.5)
    assert details["heads_removed"] == {"per_layer": [0.25] * 4, "overall": 0.25}
    assert details["neurons_removed"] == {"per_layer": [0.5] * 4, "overall": 0.5}
    assert details["parameter_reduction"] == pytest.approx(1 - after / before, abs=1e-6)
    assert 0 < details["parameter_reduction"] < 0.5  # embeddings, norms and the task head are kept


def test_a_stage_that_prunes_only_neurons_removes_no_heads(tiny_bert):
    details, _ = _prune(AutoModel.from_pretrained(tiny_bert), "feature-extraction", neurons=0.25)
    assert details["heads_removed"] == {"per_layer": [0.0] * 4, "overall": 0.0}
    assert details["neurons_removed"]["overall"] == 0.25 and details["parameter_reduction"] > 0
