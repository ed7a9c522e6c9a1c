"""Bootstrap intervals (against scikit-learn and scipy on the same resamples) and gates on the task's metric."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import v_measure_score

from worker.engine.bootstrap import indices, interval, mean_of, perplexity_of, replicates, spearman_of, v_measure_of
from worker.engine.errors import RecipeError
from worker.engine.gates import check_gates
from worker.engine.recipe import Gates, parse_recipe
from worker.engine.task_figures import TaskFigures
from worker.engine.tasks.base import TaskScore


def test_resampled_figures_equal_the_library_on_each_resample():
    rng = np.random.default_rng(0)
    labels, clusters = rng.integers(0, 4, 80), rng.integers(0, 3, 80)
    pred, gold = rng.normal(size=80), rng.integers(0, 5, 80).astype(float)  # gold ties, as in real STS sets
    nll, tokens = rng.uniform(1, 9, 80), rng.integers(1, 6, 80)
    idx = indices(80, seed=1, resamples=7)
    vm = replicates(v_measure_of(labels, clusters), idx)
    sp = replicates(spearman_of(pred, gold), idx)
    ppl = replicates(perplexity_of(nll, tokens), idx)
    for b, i in enumerate(idx):
        assert vm[b] == pytest.approx(v_measure_score(labels[i], clusters[i]), abs=1e-9)
        assert sp[b] == pytest.approx(spearmanr(pred[i], gold[i]).statistic, abs=1e-9)
        assert ppl[b] == pytest.approx(np.exp(nll[i].sum() / tokens[i].sum()), rel=1e-12)
    assert np.array_equal(idx, indices(80, seed=1, resamples=7))  # seeded: the same for every model


def correctness(n: int, rate: float, seed: int) -> np.ndarray:
    right = np.zeros(n)
    right[np.random.default_rng(seed).permutation(n)[: round(rate * n)]] = 1
    return right


def figures(teacher: np.ndarray) -> TaskFigures:
    score = TaskScore({"acc": float(teacher.mean())}, "acc", resamplers={"acc": mean_of(teacher)})
    return TaskFigures(score, "multiple-choice", len(teacher), seed=0)


def candidate(right: np.ndarray) -> TaskScore:
    return TaskScore({"acc": float(right.mean())}, "acc", resamplers={"acc": mean_of(right)})


def test_intervals_contain_the_figure_and_shrink_with_more_examples():
    widths = []
    for n in (100, 2000):
        teacher = correctness(n, 0.8, seed=1)
        cand = teacher.copy()
        cand[np.flatnonzero(teacher)[: n // 50]] = 0  # two points lost, on examples the teacher got right
        row = figures(teacher).row(candidate(cand))
        lo, hi = row["interval"]
        assert lo <= row["value"] <= hi and row["resamples"] == 1000
        assert row["teacher_interval"][0] <= row["teacher_value"] <= row["teacher_interval"][1]
        assert row["drop"] == pytest.approx(0.02)
        assert row["drop_interval"][0] <= row["drop"] <= row["drop_interval"][1]
        assert row["retention_interval"][0] <= row["retention"] <= row["retention_interval"][1]
        # paired: the candidate only ever loses, so no resample shows a gain
        assert row["drop_interval"][0] >= 0
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2


def test_the_teachers_own_row_has_no_drop_and_a_zero_width_drop_interval():
    teacher = correctness(300, 0.7, seed=2)
    row = figures(teacher).row(candidate(teacher))
    assert row["drop"] == 0 and row["drop_interval"] == [0.0, 0.0] and row["retention_interval"] == [1.0, 1.0]
    assert interval(np.array([1.0, np.nan])) is None  # a resample without a figure: no interval


ROW = {"metric": "probe_accuracy", "value": 0.88, "teacher_value": 0.90, "retention": 0.88 / 0.90,
       "drop": 0.02, "drop_interval": [0.005, 0.035], "retention_interval": [0.96, 0.995]}


@pytest.mark.parametrize(("gates", "passed"), [
    ({"max_drop": 0.02}, True),  # exactly at the threshold
    ({"max_drop": 0.019}, False),
    ({"max_drop": 0.05, "per_task": {"topics": {"max_drop": 0.01}}}, False),  # the task's own rule wins
    ({"max_drop": 0.01, "per_task": {"topics": {"max_drop": 0.03}}}, True),
    ({"min_retention": 0.97}, True),
    ({"per_task": {"topics": 0.99}}, False),  # the older form: a number is min_retention
])
def test_max_drop_and_min_retention_decide_at_their_threshold(gates, passed):
    result = check_gates({"topics": ROW}, Gates.model_validate(gates))
    assert result["passed"] is passed
    (check,) = result["checks"]
    assert check["metric"] == "probe_accuracy" and check["task"] == "topics"
    assert check["rule"] == ("max_drop" if "max_drop" in str(gates) else "min_retention")
    if not passed:
        (short,) = result["shortfalls"]
        assert short["rule"] == check["rule"] and short["metric"] == "probe_accuracy"
        expected = (ROW["drop"] - check["threshold"] if check["rule"] == "max_drop"
                    else check["threshold"] - ROW["retention"])
        assert short["short_by"] == pytest.approx(expected, abs=1e-6) and short["short_by"] > 0


def test_a_decision_inside_the_interval_is_flagged_within_noise():
    noisy = check_gates({"topics": ROW}, Gates(max_drop=0.01))  # 0.01 lies inside [0.005, 0.035]
    clear = check_gates({"topics": ROW}, Gates(max_drop=0.05))
    assert noisy["shortfalls"][0]["within_noise"] is True and noisy["within_noise"] is True
    assert clear["passed"] and clear["within_noise"] is False
    both = check_gates({"topics": ROW}, Gates(min_retention=0.99, max_drop=0.05))
    assert [c["rule"] for c in both["checks"]] == ["min_retention", "max_drop"] and not both["passed"]
    assert check_gates({"topics": ROW}, Gates()) == {"passed": True, "shortfalls": []}


def test_max_drop_in_a_recipe_is_checked_and_named():
    base = {"teacher": {"source": "bundled"}, "task": "feature-extraction", "data": {"eval": {"topics": "t.jsonl"}}}
    recipe = parse_recipe({**base, "gates": {"max_drop": 0.01, "per_task": {"topics": {"max_drop": 0.02}}}})
    assert recipe.gates.allowed_drop("topics") == 0.02 and recipe.gates.required("topics") is None
    with pytest.raises(RecipeError, match="max_drop"):
        parse_recipe({**base, "gates": {"max_drop": -0.1}})
    with pytest.raises(RecipeError, match="per_task"):
        parse_recipe({**base, "gates": {"per_task": {"topics": {"max_dorp": 0.02}}}})


def test_the_v_measure_interval_is_centred_on_its_estimate():
    # resampling duplicates examples, which adds mutual information: V-measure's resamples sit above it
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 15, 600)
    clusters = np.where(rng.random(600) < 0.5, labels, rng.integers(0, 15, 600))
    estimate = v_measure_score(labels, clusters)
    reps = replicates(v_measure_of(labels, clusters), indices(600, seed=0))
    plain, corrected = interval(reps), interval(reps, estimate)
    assert np.median(reps) > estimate
    assert plain[0] > estimate  # the plain percentile interval misses the figure altogether
    assert corrected[0] <= estimate <= corrected[1]
    assert corrected[1] - corrected[0] == pytest.approx(plain[1] - plain[0])  # the same spread, moved
