"""Hypothesis strategies for hostile recipes: a valid recipe with a few of its values replaced, deleted or
joined by unknown keys, the new values drawn from what an attacker sends (wrong types, huge integers, NaN and
Infinity, NUL bytes, lone surrogates, long strings, path components no file system takes, hub ids the hub
refuses, deep nesting) and from arbitrary JSON.

Shared by the engine's fuzz test (tests/engine/test_fuzz_recipe.py) and the API's (tests/app/test_fuzz_jobs.py).
"""

from __future__ import annotations

import copy
import math
import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# The number of generated recipes per test: small in CI, large on demand (one name for every fuzz test).
EXAMPLES = int(os.environ.get("DISTILLERY_FUZZ_EXAMPLES", "0") or 0)


def fuzz_settings(default: int) -> settings:
    return settings(max_examples=EXAMPLES or default, deadline=None, database=None, derandomize=not EXAMPLES,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large, HealthCheck.filter_too_much])


def assert_safe(value: Any) -> None:
    """What a recipe accepted is finite, valid Unicode without a NUL byte, and fits in 64 bits."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert_safe(key)
            assert_safe(item)
    elif isinstance(value, list | tuple):
        for item in value:
            assert_safe(item)
    elif isinstance(value, float):
        assert math.isfinite(value), value
    elif isinstance(value, int):
        assert -(2**63) <= value < 2**63, value
    elif isinstance(value, str):
        assert "\0" not in value and len(value) <= 4096, value[:100]
        value.encode()  # no lone surrogate


def nested(depth: int) -> Any:
    value: Any = 0
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


BAD_STRINGS = st.sampled_from([
    "", " ", "a\u0000b", "\u0000", "\ud800", "é", "\u202e", "a" * 5000, "a" * 300, "/" + "b" * 300 + "/x",
    "../../../etc/passwd", "/etc/passwd", "a--b/c", "a..b", "é/x", "x.git", "a/b/c", "-a/b", "a" * 97,
    "0" * 5000, "1e400", "NaN", "Infinity",
])
HOSTILE = BAD_STRINGS | st.sampled_from([
    2**70, -(2**70), 2**63, 2**32, -1, 0, 10**30, 1.5, -0.0, 1e308, -1e308, 5e-324,
    float("inf"), float("-inf"), float("nan"), True, False, None, [], {}, [None], {"": None}, nested(60),
])
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
           | st.text(alphabet=st.characters(codec="utf-8"), max_size=8))
JSON = st.recursive(SCALARS, lambda kids: st.lists(kids, max_size=3)
                    | st.dictionaries(st.text(max_size=12), kids, max_size=3), max_leaves=8)
VALUES = HOSTILE | JSON
FILES = st.sampled_from(["train.jsonl", "eval_cls.jsonl", "eval_sts.jsonl", "tiny-bert", "missing.jsonl",
                         "tiny-bert/config.json", "."])


def similar(current: Any) -> st.SearchStrategy:
    """A value of the same type as the one it replaces, so that more recipes get past parsing into the dry run."""
    if isinstance(current, bool):
        return st.booleans()
    if isinstance(current, int):
        return st.integers(-2, 12) | st.integers(min_value=-(2**70), max_value=2**70)
    if isinstance(current, float):
        return st.floats(-0.5, 2.5) | st.floats()
    if isinstance(current, str):
        return FILES | BAD_STRINGS | st.text(max_size=6)
    if isinstance(current, list):
        return st.lists(st.sampled_from(current), max_size=4) if current else st.just([])
    return VALUES
KEYS = st.sampled_from(["kind", "method", "source", "extra", "", "\u0000", "a" * 300, "__class__", "layers",
                        "sparsity", "path", "id", "seed"]) | st.text(max_size=12)


def _locations(value: Any, here: tuple = ()) -> list[tuple]:
    """Every place in the recipe that holds a value: dict keys and list indices, outermost first."""
    out = [here]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _locations(item, (*here, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _locations(item, (*here, index))
    return out


def _apply(recipe: dict, where: tuple, action: str, key: str, value: Any) -> dict:
    value = copy.deepcopy(value)  # drawn values may be shared constants; a later edit must not change them
    if not where:  # the root: add a key, or replace the whole body
        if action == "add":
            recipe[key] = value
            return recipe
        return value
    parent = recipe
    for part in where[:-1]:
        parent = parent[part]
    last = where[-1]
    if action == "delete":
        del parent[last]
    elif action == "add" and isinstance(parent[last], dict):
        parent[last][key] = value
    else:
        parent[last] = value
    return recipe


@st.composite
def mutated(draw: st.DrawFn, base: dict) -> Any:
    """`base` with one to three values replaced, deleted or joined by an unknown key."""
    recipe: Any = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        if not isinstance(recipe, dict):
            break
        where = draw(st.sampled_from(_locations(recipe)))
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "delete" and not where:
            action = "replace"
        current: Any = recipe
        for part in where:
            current = current[part]
        value = draw(st.one_of(similar(current), VALUES))
        recipe = _apply(recipe, where, action, draw(KEYS), value)
    return recipe
