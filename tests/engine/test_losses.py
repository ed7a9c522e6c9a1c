"""Distillation options: the learning-rate schedule, gradient clipping, temperature, the embedding losses, a
user layer map and the default student."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests import fixtures
from worker.engine import parse_recipe, run
from worker.engine.architecture import evenly_spaced
from worker.engine.data import load_dataset
from worker.engine.recipe import DistillConfig
from worker.engine.stages.distill import lr_factor
from worker.engine.tasks import get_task

FAST = {"latency_runs": 2, "warmup_runs": 0, "throughput_batch": 2}


def _run(teacher, data, stage: dict, tmp_path, task="feature-extraction", train="train", evals=None) -> dict:
    recipe = parse_recipe({
        "teacher": {"source": "local", "path": str(teacher)}, "task": task,
        "data": {"train": str(data[train]), "eval": evals or {"text": str(data["eval_text"])}},
        "stages": [stage], "evaluate": FAST,
    })
    result = run(recipe, tmp_path, roots=["/"])
    assert result.ok
    return result.report["stages"][0]["details"]


def cfg(**kw) -> DistillConfig:
    return DistillConfig(kind="distill", **kw)


# ---- the learning-rate schedule ------------------------------------------------------------------


def test_lr_factor_warms_up_linearly_then_decays_by_cosine_to_zero():
    assert lr_factor(0.0, 0.2) == 1e-3  # never exactly 0: the first step still moves
    assert lr_factor(0.05, 0.2) == pytest.approx(0.25) and lr_factor(0.1, 0.2) == pytest.approx(0.5)
    assert lr_factor(0.2, 0.2) == pytest.approx(1.0)  # the peak, at the end of warm-up
    assert lr_factor(0.6, 0.2) == pytest.approx(0.5)  # half-way through the decay: cos(pi / 2)
    assert lr_factor(1.0, 0.2) == pytest.approx(0.0) and lr_factor(1.5, 0.2) == pytest.approx(0.0)
    assert lr_factor(0.0, 0.0) == 1.0  # no warm-up: start at the peak
    ups = [lr_factor(p / 100, 0.3) for p in range(31)]
    downs = [lr_factor(p / 100, 0.3) for p in range(30, 101)]
    assert ups == sorted(ups) and downs == sorted(downs, reverse=True)


@pytest.fixture
def spy(monkeypatch):
    """Record, at every optimizer step, the learning rate and the norm of the gradients it applies, and the
    norm clip_grad_norm_ saw before clipping."""
    seen: dict[str, list[float]] = {"lr": [], "applied": [], "before": []}
    real_clip = torch.nn.utils.clip_grad_norm_

    def clip(params, max_norm, *args, **kwargs):
        total = real_clip(params, max_norm, *args, **kwargs)
        seen["before"].append(float(total))
        return total

    class SpyAdamW(torch.optim.AdamW):
        def step(self, closure=None):
            grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
            seen["applied"].append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
            seen["lr"].append(self.param_groups[0]["lr"])
            return super().step(closure)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    monkeypatch.setattr(torch.optim, "AdamW", SpyAdamW)
    return seen


def test_the_run_follows_the_schedule_and_clips_every_gradient(spy, tiny_bert, data, tmp_path):
    from safetensors.torch import load_file

    stage = {"kind": "distill", "student": {"num_layers": 2}, "max_steps": 10, "lr": 1.0, "warmup_ratio": 0.2,
             "max_grad_norm": 1e-3, "batch_size": 16, "embedding_loss": "mse", "hidden_states": {"weight": 1.0}}
    details = _run(tiny_bert, data, stage, tmp_path)
    assert details["steps"] == 10 and len(spy["lr"]) == 10
    assert spy["lr"] == pytest.approx([1.0 * lr_factor(i / 10, 0.2) for i in range(10)])
    # every step's gradient was larger than the cap, and the optimizer only ever saw it clipped to the cap
    assert min(spy["before"]) > 1e-2
    assert max(spy["applied"]) <= 1e-3 * (1 + 1e-4)
    # lr 1.0, the largest the recipe allows: weights and losses stay finite
    weights = load_file(tmp_path / "artifact" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert all(math.isfinite(x) for x in details["loss_curve"])


# ---- losses ----------------------------------------------------------------------------------------


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


def test_temperature_softens_the_kl_and_scales_it_by_t_squared():
    task = get_task("sequence-classification")
    student, teacher = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3), 0.0]])
    mask = torch.ones(1, 1)
    # T = 1: teacher (3/4, 1/4) against the student's (1/2, 1/2)
    at1 = task.distill_loss(student, teacher, mask, cfg(temperature=1.0))
    assert float(at1) == pytest.approx(_kl([0.75, 0.25], [0.5, 0.5]))
    # T = 2: teacher softmax(ln3 / 2, 0) = (sqrt3, 1) / (sqrt3 + 1), times T^2 = 4
    r = math.sqrt(3)
    at2 = task.distill_loss(student, teacher, mask, cfg(temperature=2.0))
    assert float(at2) == pytest.approx(4 * _kl([r / (r + 1), 1 / (r + 1)], [0.5, 0.5]))
    at4 = task.distill_loss(student, teacher, mask, cfg(temperature=4.0))
    assert len({round(float(x), 6) for x in (at1, at2, at4)}) == 3


def test_causal_lm_kl_over_the_top_k_is_the_token_mean_at_temperature():
    task = get_task("causal-lm")
    torch.manual_seed(0)
    student, full = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])  # the padded token does not count
    for temp in (1.0, 3.0):
        c = cfg(temperature=temp, logit_top_k=5)  # k = the whole vocabulary: exactly the KL
        loss = task.distill_loss(student, task.compact_target(full, c), mask, c)
        per_token = F.kl_div(F.log_softmax(student / temp, -1), F.log_softmax(full / temp, -1), log_target=True,
                             reduction="none").sum(-1)
        assert float(loss) == pytest.approx(float(per_token[mask.bool()].mean() * temp**2), rel=1e-5)


def test_embedding_losses_mse_and_cosine():
    task = get_task("feature-extraction")
    teacher = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    mask = torch.ones(2, 1)
    scaled = 2 * teacher  # same directions, other lengths
    assert float(task.distill_loss(scaled, teacher, mask, cfg(embedding_loss="cosine"))) == pytest.approx(0, abs=1e-6)
    assert float(task.distill_loss(scaled, teacher, mask, cfg(embedding_loss="mse"))) == pytest.approx(
        (1 + 4 + 0 + 1) / 4)
    rotated = torch.tensor([[-2.0, 1.0], [0.0, 1.0]])  # first row orthogonal, second the same
    assert float(task.distill_loss(rotated, teacher, mask, cfg(embedding_loss="cosine"))) == pytest.approx(0.5)


def test_mse_on_pooled_embeddings_learns(tiny_bert, data, tmp_path):
    stage = {"kind": "distill", "student": {"num_layers": 1}, "epochs": 4, "batch_size": 16, "lr": 1e-3,
             "embedding_loss": "mse"}
    details = _run(tiny_bert, data, stage, tmp_path)
    assert details["steps"] == 24 and details["layer_map"] == {}
    assert details["final_loss"] < 0.7 * details["first_loss"]


def test_temperature_reaches_the_training_loss(tiny_bert_cls, data, tmp_path):
    first = {}
    for temp in (1.0, 4.0):
        stage = {"kind": "distill", "student": {"num_layers": 1}, "max_steps": 1, "temperature": temp}
        first[temp] = _run(tiny_bert_cls, data, stage, tmp_path / str(temp), task="sequence-classification",
                           evals={"topics": str(data["eval_cls"])})["first_loss"]
    # same seed, same student, same first batch: only the temperature differs
    assert first[1.0] > 0 and first[4.0] > 0 and first[1.0] != pytest.approx(first[4.0], rel=1e-3)


# ---- students and layer maps -----------------------------------------------------------------------


def test_a_user_layer_map_is_the_one_trained_against(tiny_bert, data, tmp_path, monkeypatch):
    import worker.engine.stages.distill as distill

    layers_asked = []
    real = distill.compute_targets

    def recording(task, teacher, enc, config, hidden_layers, *args, **kwargs):
        layers_asked.append(hidden_layers)
        return real(task, teacher, enc, config, hidden_layers, *args, **kwargs)

    monkeypatch.setattr(distill, "compute_targets", recording)
    stage = {"kind": "distill", "student": {"num_layers": 2}, "epochs": 3, "batch_size": 16, "lr": 1e-3,
             "hidden_states": {"weight": 1.0, "layer_map": {1: 1, 2: 4}}}
    details = _run(tiny_bert, data, stage, tmp_path)
    assert details["layer_map"] == {"1": 1, "2": 4} and layers_asked == [[1, 4]]
    assert details["student_layers"] == [0, 3] and details["final_loss"] < details["first_loss"]
    # the cache holds the pooled output (fp32) and the two mapped teacher layers (fp16) per real token
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    tokens = sum(len(tok(t)["input_ids"]) for t in load_dataset(data["train"]).texts())
    assert details["teacher_cache_bytes"] == 96 * 32 * 4 + 2 * tokens * 32 * 2


def test_evenly_spaced_keeps_first_and_last():
    assert evenly_spaced(4, 2) == [0, 3]
    assert evenly_spaced(6, 3) == [0, 2, 5]
    assert evenly_spaced(12, 6) == [0, 2, 4, 7, 9, 11]
    assert evenly_spaced(12, 4) == [0, 4, 7, 11]
    assert evenly_spaced(5, 5) == [0, 1, 2, 3, 4] and evenly_spaced(3, 7) == [0, 1, 2]


def test_the_default_student_keeps_half_the_layers_evenly_spaced(assets, data, tmp_path):
    teacher = fixtures.make_bert(assets / "tiny-bert-6", layers=6, seed=3)
    details = _run(teacher, data, {"kind": "distill", "max_steps": 1}, tmp_path)
    assert details["student_layers"] == [0, 2, 5] and details["student_depth"] == 3
    assert details["teacher_depth"] == 6
