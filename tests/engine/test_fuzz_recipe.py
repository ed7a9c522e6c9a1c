"""Fuzzing the recipe: hostile variations of valid recipes are refused with an EngineError naming the field, or
parse and plan; no other exception escapes (an API would answer it with a 500, the CLI with a traceback).

A short budget runs in CI. A long run on demand (the same variable sizes the upload parsers' fuzz test):

    DISTILLERY_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest tests/engine/test_fuzz_recipe.py \
        tests/app/test_fuzz_jobs.py -p no:cacheprovider -q

A failing case is printed by hypothesis as the recipe that broke it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy
import pytest
import torch
from huggingface_hub.utils import validate_repo_id
from hypothesis import event, given
from hypothesis import strategies as st

from tests.recipe_strategies import assert_safe, fuzz_settings, mutated
from worker.engine.errors import EngineError
from worker.engine.plan import make_plan
from worker.engine.recipe import Recipe, parse_recipe

SINGLE = {
    "teacher": {"source": "local", "path": "tiny-bert"},
    "task": "feature-extraction",
    "data": {"train": "train.jsonl", "eval": {"cls": "eval_cls.jsonl", "sts": "eval_sts.jsonl"}},
    "stages": [
        {"kind": "distill", "student": {"layers": [0, 2]}, "epochs": 1, "max_steps": 2, "lr": 1e-4,
         "hidden_states": {"layer_map": {"1": 1, "2": 3}, "weight": 0.5}, "time_budget_s": 60.0},
        {"kind": "prune", "method": "magnitude", "sparsity": 0.3},
        {"kind": "quantize", "method": "int8-dynamic", "embeddings": "int8"},
    ],
    "gates": {"min_retention": 0.9, "per_task": {"cls": 0.8, "sts": {"max_drop": 0.05}}},
    "evaluate": {"latency_runs": 2, "max_examples": 16},
    "seed": 7,
    "max_length": 32,
}
SEARCH = {
    "teacher": {"source": "local", "path": "tiny-bert"},
    "task": "feature-extraction",
    "tasks": {"a": {"train": "train.jsonl", "eval": "eval_cls.jsonl", "gate": 0.8, "weight": 1.0},
              "b": {"train": "train.jsonl", "eval": "eval_sts.jsonl"}},
    "strategy": "shared",
    "stages": [{"kind": "distill", "epochs": 1, "max_steps": 2}],
    "search": {"space": {"depth": [1, 2], "sparsity": [0.0, 0.5], "quantization": ["none", "int8-dynamic"]},
               "objective": {"minimize": "mix", "batch": 4, "size_weight": 0.5}, "max_trials": 3},
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_bert, data) -> Path:
    """The model and the data files side by side, as a recipe's relative paths name them."""
    root = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(tiny_bert, root / "tiny-bert")
    for name in ("train", "eval_cls", "eval_sts"):
        shutil.copy(data[name], root / f"{name}.jsonl")
    return root


def check(raw: object, root: Path) -> None:
    """The property: a RecipeError/EngineError naming what is wrong, or a recipe that plans."""
    try:
        recipe = parse_recipe(raw)
    except EngineError as exc:
        assert exc.message and "Traceback" not in exc.message
        event("refused by the recipe")
        return
    assert isinstance(recipe, Recipe)
    assert_safe(recipe.model_dump(mode="python"))
    torch.Generator().manual_seed(recipe.seed)  # as the run seeds torch
    numpy.random.RandomState(recipe.seed)  # numpy takes 32 bits
    for ref in (recipe.teacher, *(getattr(getattr(s, "student", None), "model", None) for s in recipe.stages)):
        if getattr(ref, "source", None) == "hf":
            validate_repo_id(ref.id)  # the hub would refuse it at download time
    try:
        make_plan(recipe, base_dir=root, roots=[root], work_dir=root / "work")
        event("planned")
    except EngineError as exc:
        assert exc.message and "Traceback" not in exc.message
        event("refused by the dry run")
    finally:
        shutil.rmtree(root / "work", ignore_errors=True)


def test_the_base_recipes_are_valid(workspace):
    make_plan(parse_recipe(SINGLE), base_dir=workspace, roots=[workspace], work_dir=workspace / "work")
    make_plan(parse_recipe(SEARCH), base_dir=workspace, roots=[workspace], work_dir=workspace / "work")


@fuzz_settings(default=300)
@given(raw=st.one_of(mutated(SINGLE), mutated(SEARCH)))
def test_hostile_recipes_are_refused_naming_the_field_or_plan(workspace, raw):
    check(raw, workspace)
