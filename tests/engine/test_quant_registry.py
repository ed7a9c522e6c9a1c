"""The quantization-method registry: a method registered from a test alone runs end to end through
`distillery compress` (recipe validation, the stage, the artifact and its reload, the search's order),
without editing any engine module."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from tests.engine.test_cli import compress, recipe_for
from worker.engine import load_artifact
from worker.engine.errors import RecipeError
from worker.engine.multi_plan import Point
from worker.engine.quantization import QuantMethod, register_method, unregister_method
from worker.engine.quantization.registry import SAFETENSORS_FORMAT, at_least_as_coarse
from worker.engine.recipe import QuantizeConfig, parse_recipe
from worker.engine.search import at_most_as_aggressive

LEVELS = 31  # a signed 6-bit grid, per output row


def on_grid(weight: torch.Tensor) -> bool:
    scale = weight.abs().amax(dim=1, keepdim=True) / LEVELS
    steps = weight / scale
    return bool(torch.allclose(steps, steps.round(), atol=1e-3))


class SixBitRounding(QuantMethod):
    """Fake quantization kept in float: each Linear's weights rounded to 63 levels per row."""

    name = "toy-6bit"
    short_id = "t6"
    rank = 4
    coarser_than = frozenset({"fp16", "bf16", "int8-weight-only", "int8-dynamic"})
    artifact_format = SAFETENSORS_FORMAT
    backends = ("toy-rounding",)

    def validate(self, cfg, info, device) -> list[str]:
        return ["toy method: weights stay float, rounded to 6 bits"]

    def quantize(self, model: nn.Module, cfg, device, spec: dict) -> nn.Module:
        spec["backend"] = "toy-rounding"
        with torch.no_grad():
            for name, mod in model.named_modules():
                if type(mod) is nn.Linear:
                    scale = mod.weight.abs().amax(dim=1, keepdim=True) / LEVELS
                    mod.weight.copy_((mod.weight / scale).round() * scale)
                    spec["linear"].append(name)
        return model

    def rebuild(self, model: nn.Module, spec: dict) -> nn.Module:
        return model  # the saved float weights are already rounded


@pytest.fixture
def toy_method():
    register_method(SixBitRounding)
    yield SixBitRounding.name
    unregister_method(SixBitRounding.name)


def test_a_method_registered_by_a_test_runs_through_distillery_compress(toy_method, request, data, write_recipe,
                                                                        tmp_path, capsys):
    recipe = recipe_for("feature-extraction", request, data, [{"kind": "quantize", "method": toy_method}])
    out = tmp_path / "out"
    assert compress(write_recipe(recipe), out) == 0, capsys.readouterr()

    report = json.loads((out / "report.json").read_text())
    stage = report["stages"][0]["details"]
    assert report["stages"][0]["reload_max_abs_diff"] == 0.0
    assert stage["method"] == toy_method and stage["backend"] == "toy-rounding"
    assert stage["notes"] == ["toy method: weights stay float, rounded to 6 bits"]
    model, _ = load_artifact(out / "artifact")
    linears = [m for m in model.modules() if type(m) is nn.Linear]
    assert linears and all(on_grid(m.weight) for m in linears)


def test_the_registry_drives_validation_the_schema_and_the_search_order(toy_method):
    assert toy_method in QuantizeConfig.model_json_schema()["properties"]["method"]["enum"]
    with pytest.raises(ValueError, match="embeddings: int8 goes with method int8-dynamic"):
        QuantizeConfig(kind="quantize", method=toy_method, embeddings="int8")
    assert at_least_as_coarse("int8-dynamic", toy_method) and not at_least_as_coarse("int4-weight-only", toy_method)
    assert at_most_as_aggressive(Point(3, 0.0, "int8-dynamic", "keep"), Point(3, 0.0, toy_method, "keep"))
    assert Point(3, 0.0, toy_method, "keep").id == "d3-s00-t6"


def test_an_unregistered_method_is_refused_naming_the_known_ones(toy_method):
    unregister_method(toy_method)
    bad = {"teacher": {"source": "bundled"}, "task": "feature-extraction", "data": {"train": "t.jsonl"},
           "stages": [{"kind": "quantize", "method": toy_method}]}
    with pytest.raises(RecipeError) as err:
        parse_recipe(bad)
    assert "unknown quantization method 'toy-6bit'" in err.value.message and "int8-dynamic" in err.value.message
    assert err.value.field == "stages.0.method"
