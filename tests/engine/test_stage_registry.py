"""Stage kinds are registered, not listed: a config and a Stage class registered by a test alone parse in
recipes (and the JSON Schema), run through `distillery compress`, give the memory estimate their own figure
and follow the ordering rules their capability flags state."""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Literal

import pytest
import torch
from pydantic import Field
from torch import nn

from tests.engine.test_cli import compress, recipe_for
from worker.engine import parse_recipe
from worker.engine.errors import RecipeError
from worker.engine.memory import FP32, MemoryInputs, estimate, parameters
from worker.engine.plan import make_plan
from worker.engine.recipe import Recipe, Strict
from worker.engine.stage_kinds import register_stage_config, unregister_stage_config
from worker.engine.stages.base import Stage, register, unregister


class PerturbConfig(Strict):
    kind: Literal["perturb"]
    std: float = Field(0.01, gt=0, le=1)


class Perturb(Stage):
    """Adds seeded Gaussian noise to every Linear weight (a stand-in for a real transformation)."""

    config: PerturbConfig

    def run(self, candidate, env, ctx):
        model = copy.deepcopy(candidate.model)
        gen = torch.Generator().manual_seed(env.seed)
        with torch.no_grad():
            for mod in model.modules():
                if type(mod) is nn.Linear:
                    mod.weight.add_(torch.randn(mod.weight.shape, generator=gen) * self.config.std)
        self.details = {"std": self.config.std}
        return dataclasses.replace(candidate, model=model)

    def memory_parts(self, m: MemoryInputs) -> dict[str, int]:
        return {"model weights and a thousand noisy copies": 1001 * FP32 * parameters(m.before)}


@pytest.fixture
def perturb():
    register_stage_config("perturb", PerturbConfig)
    register(PerturbConfig)(Perturb)
    yield
    unregister(PerturbConfig)
    unregister_stage_config("perturb")


def test_a_stage_registered_by_a_test_runs_through_distillery_compress(perturb, request, data, write_recipe,
                                                                       tmp_path, capsys):
    recipe = recipe_for("feature-extraction", request, data, [{"kind": "perturb", "std": 0.05}])
    out = tmp_path / "out"
    assert compress(write_recipe(recipe), out) == 0, capsys.readouterr()
    stage = json.loads((out / "report.json").read_text())["stages"][0]
    assert stage["kind"] == "perturb" and stage["details"]["std"] == 0.05 and stage["status"] == "passed"
    assert stage["evaluation"]["tasks"]["text"]["value"] < 0.9999  # the weights did change
    assert Recipe.model_json_schema()["$defs"]["PerturbConfig"]["properties"]["kind"]["const"] == "perturb"


def test_its_memory_hook_and_ordering_flags_are_used(perturb, request, data, tmp_path):
    recipe = parse_recipe(recipe_for("feature-extraction", request, data, [{"kind": "perturb"}]))
    plan = make_plan(recipe, base_dir=tmp_path, roots=["/"], work_dir=tmp_path / "work")
    peak = estimate(plan)
    assert peak.where == "stages.0" and "a thousand noisy copies" in peak.describe()

    after_quantize = recipe_for("feature-extraction", request, data,
                                [{"kind": "quantize", "method": "int8-dynamic"}, {"kind": "perturb"}])
    with pytest.raises(RecipeError, match=r"stage 1 \(perturb\) comes after quantize") as err:
        make_plan(parse_recipe(after_quantize), base_dir=tmp_path, roots=["/"], work_dir=tmp_path / "work")
    assert err.value.field == "stages.1"


def test_unregistered_it_is_an_unknown_stage_again(request, data):
    with pytest.raises(RecipeError, match=r"unknown stage: kind must be distill, prune .*quantize or evaluate"):
        parse_recipe(recipe_for("feature-extraction", request, data, [{"kind": "perturb"}]))
