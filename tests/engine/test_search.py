"""Accuracy-aware search: the chosen candidate is the one exhaustive evaluation chooses, at a fraction of the
trials; the gate rejects what breaks the fragile task; a stopped search resumes without redoing trials."""

from __future__ import annotations

import itertools
import json
import random

import pytest

from worker.engine import RunContext, parse_recipe, run
from worker.engine.errors import EngineError
from worker.engine.multi_plan import Point
from worker.engine.search import Outcome, Search, at_most_as_aggressive, exhaustive_best, pareto

FAST = {"latency_runs": 2, "warmup_runs": 0, "throughput_batch": 2}
SPACE = {"depth": [1, 2, 3], "sparsity": [0, 0.5, 0.75], "quantization": ["none", "int8-dynamic"]}


def recipe(teacher, two_tasks, *, fragile_gate=0.9, space=SPACE, **search):
    return {
        "teacher": {"source": "local", "path": str(teacher)}, "task": "sequence-classification",
        "tasks": {"fragile": {"train": str(two_tasks["fragile_train"]), "eval": str(two_tasks["fragile_eval"]),
                              "gate": fragile_gate},
                  "robust": {"train": str(two_tasks["robust_train"]), "eval": str(two_tasks["robust_eval"]),
                             "gate": 0.95}},
        "stages": [{"kind": "distill", "epochs": 4, "batch_size": 16, "lr": 2e-3}],
        "search": {"space": dict(space), **search}, "evaluate": FAST, "max_length": 32,
    }


# ---- the decision logic, against exhaustive evaluation of random monotone problems ---------------------


def test_search_logic_matches_exhaustive_choice_on_random_monotone_grids():
    quants = ["none", "int8-weight-only", "int8-dynamic", "int4-weight-only"]
    points = [Point(d, s, q, "keep") for d in (2, 3, 4) for s in (0.0, 0.3, 0.6) for q in quants]
    rng = random.Random(0)
    used = []
    for _ in range(200):
        a, b, thr = rng.uniform(0.5, 2), rng.uniform(1, 6), rng.uniform(1, 9)
        pen = {"none": 0, "int8-weight-only": rng.uniform(0, 0.5)}
        pen.update({q: pen["int8-weight-only"] + rng.uniform(0, 1.5) for q in ("int8-dynamic", "int4-weight-only")})
        passes = {p: a * p.depth - b * p.sparsity - pen[p.quantization] >= thr for p in points}
        assert all(passes[x] or not passes[y] for x, y in itertools.product(points, points)
                   if at_most_as_aggressive(x, y))  # the problem is monotone, as the search assumes
        size = {p: p.depth * (1 - 0.5 * p.sparsity) * {"none": 4, "int4-weight-only": 1.2}.get(p.quantization, 1)
                + rng.random() * 0.01 for p in points}
        truth = {p: Outcome(passes[p], size[p]) for p in points}
        search, results = Search(points, size), {}
        while (nxt := search.next(results, {p.depth for p in results})) is not None:
            assert nxt not in results
            results[nxt] = truth[nxt]
        assert search.best(results) == exhaustive_best(truth)
        used.append(len(results))
    assert max(used) <= len(points) // 3, used


def test_pareto_keeps_only_undominated_trials():
    rows = [{"id": "a", "size": 1, "worst_retention": 0.5}, {"id": "b", "size": 2, "worst_retention": 0.9},
            {"id": "c", "size": 3, "worst_retention": 0.8}, {"id": "d", "size": 4, "worst_retention": 0.95}]
    assert pareto(rows, "size") == ["a", "b", "d"]


# ---- the engine on tiny models --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exhaustive(tiny_bert_cls, two_tasks, tmp_path_factory):
    """Every point of the 18-point grid, tried: the reference the search must match."""
    out = tmp_path_factory.mktemp("exhaustive")
    return run(parse_recipe(recipe(tiny_bert_cls, two_tasks, exhaustive=True)), out, roots=["/"]).report


def test_search_returns_the_most_compressed_passing_candidate_at_a_third_of_the_trials(
        tiny_bert_cls, two_tasks, exhaustive, tmp_path):
    events = []
    result = run(parse_recipe(recipe(tiny_bert_cls, two_tasks)), tmp_path / "out", roots=["/"],
                 ctx=RunContext(on_progress=events.append))
    search, full = result.report["search"], exhaustive["search"]
    assert full["trials_run"] == full["grid_size"] == 18
    passing = [t for t in full["trials"] if t["status"] == "passed"]
    smallest = min(passing, key=lambda t: t["size_bytes"])
    assert result.ok and search["passed"] and search["best"]["id"] == smallest["id"] == full["best"]["id"]
    assert search["best"]["size_bytes"] == smallest["size_bytes"]
    assert search["trials_run"] <= full["grid_size"] // 3
    # the gate rejects exactly the candidates that break the fragile task; the robust one never falls short
    for t in full["trials"]:
        short = {s["task"] for s in t["gate"]["shortfalls"]}
        assert short == ({"fragile"} if t["status"] == "failed-gate" else set())
        assert (t["evaluation"]["tasks"]["fragile"]["retention"] >= 0.9) == (t["status"] == "passed")
    # fragile degrades faster under pruning than robust, at every depth
    by_id = {t["id"]: t for t in full["trials"]}
    drops = {"fragile": [], "robust": []}
    for d in (1, 2, 3):
        dense, pruned = by_id[f"d{d}-s00-fp32"]["evaluation"]["tasks"], by_id[f"d{d}-s75-fp32"]["evaluation"]["tasks"]
        for task in drops:
            drops[task].append(dense[task]["retention"] - pruned[task]["retention"])
    assert all(f > r for f, r in zip(drops["fragile"], drops["robust"], strict=True)), drops
    assert sum(drops["fragile"]) / 3 > 0.1 and sum(drops["robust"]) / 3 < 0.02, drops
    # every trial is a row and an event; predictions of size were exact; shared prefixes were reused
    ids = [t["id"] for t in search["trials"]]
    assert [t["order"] for t in search["trials"]] == list(range(1, len(ids) + 1))
    for tid in ids:
        assert any(e.stage == f"search/{tid}" and e.message.startswith("trial ")
                   and ("passed" in e.message or "failed-gate" in e.message) for e in events)
        assert by_id[tid]["size_bytes"] == next(t for t in search["trials"] if t["id"] == tid)["size_bytes"]
    assert all(t["predicted_objective"] == t["size_bytes"] for t in search["trials"])
    distilled = [e.stage for e in events if e.stage.endswith(":distill") and e.message == "starting"]
    assert len(distilled) == len(set(distilled)) == len({t["point"]["depth"] for t in search["trials"]})
    front = search["frontier"]["size"]
    assert front and front[-1] in ids and search["best"]["id"] in front
    assert result.artifact is not None and (result.artifact / "distillery.json").is_file()
    assert result.report["final"]["trial"] == search["best"]["id"]


def test_when_nothing_passes_the_best_effort_is_marked_failing_with_its_shortfalls(tiny_bert_cls, two_tasks,
                                                                                   tmp_path):
    space = {"depth": [1, 2], "sparsity": [0, 0.75], "quantization": ["none"]}
    result = run(parse_recipe(recipe(tiny_bert_cls, two_tasks, fragile_gate=0.99, space=space)), tmp_path / "out",
                 roots=["/"])
    search = result.report["search"]
    assert result.status == "failed-gate" and result.artifact is None and not search["passed"]
    assert search["best"] is None and search["trials_run"] <= 3  # the failures imply the rest
    effort = search["best_effort"]
    assert effort["status"] == "failed-gate" and [s["task"] for s in effort["shortfalls"]] == ["fragile"]
    assert effort["id"] == "d2-s00-fp32" and result.report["shortfalls"] == effort["shortfalls"]


def test_a_stopped_search_resumes_without_redoing_finished_trials(tiny_bert_cls, two_tasks, exhaustive, tmp_path):
    seen = []

    def after_two_trials() -> bool:
        return sum(1 for e in seen if e.stage.startswith("search/") and e.message.startswith("trial ")
                   and ("passed" in e.message or "failed-gate" in e.message)) >= 2

    parsed = parse_recipe(recipe(tiny_bert_cls, two_tasks))
    first = run(parsed, tmp_path / "out", roots=["/"], ctx=RunContext(on_progress=seen.append,
                                                                      should_cancel=after_two_trials))
    assert first.status == "cancelled" and first.report["search"]["trials_run"] == 2
    done = [t["id"] for t in first.report["search"]["trials"]]
    events = []
    second = run(parsed, tmp_path / "out", roots=["/"], resume=True, ctx=RunContext(on_progress=events.append))
    trials = second.report["search"]["trials"]
    assert second.ok and [t["id"] for t in trials[:2]] == done
    resumed = {e.stage.removeprefix("search/") for e in events if e.message.startswith("trial resumed")}
    assert resumed == set(done)
    started = [e.stage.removeprefix("search/") for e in events if e.message.endswith(": starting")]
    assert not set(started) & set(done) and len(started) == len(trials) - 2
    assert not any(e.message.startswith("probing") for e in events)  # the predictions were kept too
    assert second.report["search"]["best"]["id"] == exhaustive["search"]["best"]["id"]
    stored = json.loads((tmp_path / "out" / "search" / "trials" / done[0] / "trial.json").read_text())
    assert stored["id"] == done[0]


@pytest.mark.parametrize("change, field", [
    (lambda r: r["search"]["space"].update(depth=[2, 9]), "search.space.depth"),
    (lambda r: r["search"]["space"].update(sparsity=[1.5]), "search.space.sparsity.0"),
    (lambda r: r["search"]["space"].update(embeddings=["int8"], quantization=["none"]), "search.space"),
    (lambda r: r["search"]["space"].update(depth=[0]), "search.space.depth.0"),
    (lambda r: r.update(strategy="per-task"), "strategy"),
    (lambda r: r["stages"].append({"kind": "quantize", "method": "int8-dynamic"}), "stages"),
    (lambda r: r["stages"][0].update(student={"num_layers": 2}), "stages.0.student"),
])
def test_bad_search_configs_are_refused_naming_the_field(tiny_bert_cls, two_tasks, tmp_path, change, field):
    raw = recipe(tiny_bert_cls, two_tasks)
    change(raw)
    with pytest.raises(EngineError) as info:
        run(parse_recipe(raw), tmp_path / "out", roots=["/"])
    assert info.value.field == field


def test_search_and_students_through_the_cli(tiny_bert_cls, two_tasks, write_recipe, tmp_path, capsys):
    from tests.engine.test_cli import compress

    space = {"depth": [1, 2], "sparsity": [0], "quantization": ["none", "int8-dynamic"]}
    assert compress(write_recipe(recipe(tiny_bert_cls, two_tasks, space=space)), tmp_path / "s") == 0
    out = capsys.readouterr().out
    assert "points tried; best d2-s00-i8d" in out and "\nd2-s00-i8d " in out.split("\nstatus:")[0]
    multi = recipe(tiny_bert_cls, two_tasks, fragile_gate=0.99)
    del multi["search"]
    multi["strategy"] = "both"
    assert compress(write_recipe(multi, "multi.yaml"), tmp_path / "m") == 3  # a gate failed
    out = capsys.readouterr().out
    assert "gate: student fragile: task fragile" in out and "shared " in out
