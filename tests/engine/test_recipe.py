"""Recipe validation: typos, out-of-range values and unknown kinds name their field."""

from __future__ import annotations

import pytest

from worker.engine.errors import RecipeError
from worker.engine.recipe import DistillConfig, PruneNMConfig, QuantizeConfig, load_recipe, parse_recipe

BASE = {"teacher": {"source": "local", "path": "/m"}, "task": "feature-extraction"}


def err(recipe: dict) -> RecipeError:
    with pytest.raises(RecipeError) as info:
        parse_recipe(recipe)
    return info.value


def test_full_recipe_parses_into_typed_stages():
    r = parse_recipe({**BASE, "stages": [
        {"kind": "distill", "student": {"layers": [0, 2, 4]}, "epochs": 3, "lr": 1e-4},
        {"kind": "prune", "method": "magnitude", "sparsity": 0.3, "scope": "global"},
        {"kind": "prune", "method": "n:m", "n": 2, "m": 4},
        {"kind": "quantize", "method": "int8-dynamic", "embeddings": "int8"},
    ], "gates": {"min_retention": 0.97}})
    assert isinstance(r.stages[0], DistillConfig) and r.stages[0].student.layers == [0, 2, 4]
    assert isinstance(r.stages[2], PruneNMConfig) and (r.stages[2].n, r.stages[2].m) == (2, 4)
    assert isinstance(r.stages[3], QuantizeConfig) and r.stages[3].embeddings == "int8"
    assert r.gates.required("anything") == 0.97


def test_stage_typo_names_the_field():
    e = err({**BASE, "stages": [{"kind": "distill", "epoch": 3}]})
    assert e.field == "stages.0.epoch" and "Extra inputs" in str(e)


def test_unknown_stage_kind_and_prune_method():
    assert "unknown stage" in str(err({**BASE, "stages": [{"kind": "prnue"}]}))
    assert err({**BASE, "stages": [{"kind": "prune", "method": "random"}]}).field == "stages.0"


def test_sparsity_out_of_range():
    e = err({**BASE, "stages": [{"kind": "prune", "method": "magnitude", "sparsity": 1.5}]})
    assert e.field == "stages.0.sparsity"


def test_unknown_task_and_unpinned_revision():
    assert err({**BASE, "task": "translation"}).field == "task"
    e = err({**BASE, "teacher": {"source": "hf", "id": "org/name", "revision": "main"}})
    assert e.field == "teacher.revision"


def test_int8_embeddings_only_with_int8_dynamic():
    e = err({**BASE, "stages": [{"kind": "quantize", "method": "fp16", "embeddings": "int8"}]})
    assert "embeddings" in str(e)


def test_gate_for_unknown_eval_task_is_refused():
    e = err({**BASE, "data": {"eval": {"a": "a.jsonl"}}, "gates": {"per_task": {"b": 0.9}}})
    assert "['b']" in str(e)


def test_n_must_be_below_m_and_student_one_way():
    assert "smaller than m" in str(err({**BASE, "stages": [{"kind": "prune", "method": "n:m", "n": 4, "m": 4}]}))
    e = err({**BASE, "stages": [{"kind": "distill", "student": {"layers": [0], "num_layers": 2}}]})
    assert "not layers and num_layers" in str(e)


def test_load_recipe_reports_bad_yaml(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("teacher: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="cannot read"):
        load_recipe(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(RecipeError, match="mapping"):
        load_recipe(tmp_path / "list.yaml")


def test_configs_round_trip_through_dicts():
    r = parse_recipe({**BASE, "stages": [
        {"kind": "distill", "hidden_states": {"layer_map": {1: 2}}},
        {"kind": "prune", "method": "structured", "heads": 0.25, "neurons": 0.5},
        {"kind": "quantize", "method": "int4-weight-only", "group_size": 64},
        {"kind": "evaluate", "latency_runs": 5},
    ]})
    again = parse_recipe(r.model_dump(mode="json"))
    assert again == r
