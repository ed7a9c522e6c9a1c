"""Run modes are registered: a mode registered by a test alone is chosen for the plans it applies to, before
the built-in single run, and runs through `distillery compress`."""

from __future__ import annotations

import json

import pytest

from tests.engine.test_cli import compress, recipe_for
from worker.engine.report import load_report
from worker.engine.run_common import write_json
from worker.engine.run_modes import register_run_mode, unregister_run_mode
from worker.engine.single_run import run_plan

SEED = 987


def twice_checked(plan, out_dir, ctx, resume):
    """The single run, with the report saying which mode ran it."""
    result = run_plan(plan, out_dir, ctx, resume)
    result.report["mode"] = "twice-checked"
    write_json(out_dir / "report.json", result.report)
    return result


@pytest.fixture
def mode():
    register_run_mode("twice-checked", lambda plan: plan.recipe.seed == SEED, twice_checked, priority=5)
    yield
    unregister_run_mode("twice-checked")


@pytest.mark.parametrize("seed", [SEED, 0])
def test_a_registered_mode_runs_the_plans_it_applies_to(mode, seed, request, data, write_recipe, tmp_path):
    recipe = recipe_for("feature-extraction", request, data, [{"kind": "quantize", "method": "int8-dynamic"}],
                        seed=seed)
    out = tmp_path / "out"
    assert compress(write_recipe(recipe), out) == 0
    report = json.loads((out / "report.json").read_text())
    assert load_report(report).mode == ("twice-checked" if seed == SEED else "single")
    assert report["status"] == "succeeded" and (out / "artifact").is_dir()
