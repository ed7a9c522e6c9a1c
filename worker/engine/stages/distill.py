"""Knowledge distillation into a student made by keeping teacher layers (or given by reference).

Losses: the task's soft loss (KL at a temperature on logits, MSE or cosine on pooled embeddings),
optional hidden-state matching through a layer map, optional hard-label loss. AdamW with warm-up
and cosine decay, gradient clipping, seeded; the teacher runs once over the transfer set.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import time

import torch
import torch.nn.functional as F

from ..architecture import ModelInfo, evenly_spaced, keep_layers, num_layers
from ..candidate import Candidate
from ..context import RunContext
from ..errors import StageError
from ..memory import FP32, MemoryInputs, activations, parameters, teacher_targets
from ..recipe import DistillConfig
from ..references import ResolvedModel
from ..tasks.base import encode
from .base import Stage, StageEnv, register
from .distill_student import load_student, student_info
from .distill_targets import compute_targets


def default_layer_map(student_depth: int, teacher_depth: int) -> dict[int, int]:
    """Student hidden state m matches teacher hidden state round(m * T / S) (TinyBERT's uniform map)."""
    return {m: round(m * teacher_depth / student_depth) for m in range(1, student_depth + 1)}


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    # No decay on biases and norms: decaying them only fights the loss.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(progress: float, warmup_ratio: float) -> float:
    """Linear warm-up over the first `warmup_ratio` of training, then cosine decay to zero at the end.

    `progress` runs from 0 to 1: the larger of steps done / steps planned and, with a time budget,
    seconds spent / seconds allowed, so the rate has decayed whichever limit ends training."""
    if progress < warmup_ratio:
        return max(progress / warmup_ratio, 1e-3)
    rest = (progress - warmup_ratio) / max(1e-9, 1 - warmup_ratio)
    return 0.5 * (1 + math.cos(math.pi * min(rest, 1.0)))


@register(DistillConfig)
class Distill(Stage):
    requires_train_data = True
    config: DistillConfig
    student_model: ResolvedModel | None = None  # an explicit student, resolved and checked once

    def memory_parts(self, m: MemoryInputs) -> dict[str, int]:
        if m.train is None:  # refused by the dry run; nothing to train on
            return {"student weights": FP32 * parameters(m.after)}
        weights, batch = FP32 * parameters(m.after), self.config.batch_size
        return {"teacher weights": m.teacher_weights, "student weights, gradients and AdamW state": 4 * weights,
                f"training activations (batch {batch} x {m.seq} tokens)": activations(m.after, batch, m.seq, m.task),
                "cached teacher targets": teacher_targets(self.config, m.teacher, m.after, m.train, m.seq, m.task)}

    def _student_layers(self, depth: int) -> list[int] | None:
        spec = self.config.student
        if spec.model is not None:
            return None
        if spec.layers is not None:
            return list(spec.layers)
        return evenly_spaced(depth, spec.num_layers or max(1, depth // 2))

    def validate(self, info: ModelInfo, env: StageEnv) -> ModelInfo:
        cfg = self.config
        if env.train is None:
            raise StageError("distill needs data.train (unlabelled text is enough)", field="data.train")
        env.task.check_dataset(env.train, "train", "data.train")
        if cfg.student.layers is not None:
            bad = [i for i in cfg.student.layers if i >= info.num_layers]
            if bad:
                raise StageError(f"layer {bad[0]} does not exist: the model has {info.num_layers} layers "
                                 f"(0..{info.num_layers - 1})", field=f"{self.field}.student.layers")
        if cfg.student.num_layers is not None and cfg.student.num_layers > info.num_layers:
            raise StageError(f"num_layers {cfg.student.num_layers} is more than the model's {info.num_layers}",
                             field=f"{self.field}.student.num_layers")
        if cfg.hard_label_weight > 0:
            if env.task.name == "feature-extraction":
                raise StageError("feature-extraction has no hard labels; set hard_label_weight to 0",
                                 field=f"{self.field}.hard_label_weight")
            if env.task.name == "sequence-classification" and env.train.kind != "classification":
                raise StageError("hard_label_weight needs a labelled data.train ({text, label} rows)",
                                 field=f"{self.field}.hard_label_weight")
        if cfg.student.model is not None:
            self.student_model, after = student_info(self, info, env)
        else:
            layers = self._student_layers(info.num_layers)
            assert layers is not None
            after = dataclasses.replace(info, num_layers=len(layers))
        if cfg.hidden_states and cfg.hidden_states.layer_map:
            for s, t in cfg.hidden_states.layer_map.items():
                if not 0 <= s <= after.num_layers or not 0 <= t <= info.num_layers:
                    raise StageError(f"layer_map {s}->{t} is out of range (student 0..{after.num_layers}, teacher "
                                     f"0..{info.num_layers})", field=f"{self.field}.hidden_states.layer_map")
        return after  # later stages are checked against the student's shape

    def _make_student(self, candidate: Candidate, env: StageEnv) -> tuple[torch.nn.Module, list[int] | None]:
        spec = self.config.student
        if spec.model is not None:
            # checked here too: a run may not have been planned with this very stage (students, resume)
            self.student_model, _ = student_info(self, ModelInfo.from_config(candidate.model.config), env)
            student, tokenizer = load_student(self, self.student_model, candidate.model.config, env)
            if tokenizer.get_vocab() != candidate.tokenizer.get_vocab():
                raise StageError("the student's tokenizer differs from the teacher's; distillation matches "
                                 "outputs token by token and needs the same vocabulary",
                                 field=f"{self.field}.student.model")
            return student, None
        layers = self._student_layers(num_layers(candidate.model))
        student = copy.deepcopy(candidate.model)
        keep_layers(student, layers)
        return student, layers

    def run(self, candidate: Candidate, env: StageEnv, ctx: RunContext) -> Candidate:
        cfg, task, device = self.config, env.task, env.device
        assert env.train is not None and env.teacher is not None
        torch.manual_seed(env.seed)
        rng = random.Random(env.seed)
        teacher = env.teacher.model.to(device)
        student, layers = self._make_student(candidate, env)
        student = student.to(device)
        teacher_depth, student_depth = num_layers(teacher), num_layers(student)
        layer_map: dict[int, int] = {}
        if cfg.hidden_states is not None:
            layer_map = dict(cfg.hidden_states.layer_map or default_layer_map(student_depth, teacher_depth))

        labels = task.labels_for(teacher, env.train) if cfg.hard_label_weight > 0 else None
        texts = env.train.texts()
        enc = encode(env.teacher.tokenizer, texts, env.max_length, labels)
        targets = compute_targets(task, teacher, enc, cfg, sorted(set(layer_map.values())), device,
                                  cfg.batch_size, ctx, self.label)

        steps_per_epoch = (sum(math.ceil((g.stop - g.start) / cfg.batch_size) for g in env.train_groups)
                           or math.ceil(len(enc) / cfg.batch_size))
        total = steps_per_epoch * cfg.epochs
        if cfg.max_steps is not None:
            total = min(total, cfg.max_steps)
        optimizer = torch.optim.AdamW(_param_groups(student, cfg.weight_decay), lr=cfg.lr)
        primary_weight = cfg.embedding_weight if task.name == "feature-extraction" else cfg.logit_weight

        # Dropout off: with a few thousand examples, matching the teacher exactly converges faster.
        student.eval()
        start, step, losses, stopped_by = time.perf_counter(), 0, [], "epochs"
        while step < total:
            for batch, scale in _epoch(len(enc), cfg.batch_size, env.train_groups, rng, enc):
                ctx.check_cancel()
                loss = self._loss(task, student, batch, targets, layer_map, primary_weight, device)
                if scale != 1.0:
                    loss = loss * scale
                elapsed = time.perf_counter() - start
                progress = step / total
                if cfg.time_budget_s is not None:
                    progress = max(progress, elapsed / cfg.time_budget_s)
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * lr_factor(progress, cfg.warmup_ratio)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                losses.append(loss.item())
                if step % 10 == 0 or step == total:
                    ctx.progress(self.label, "training", step=step, total=total, loss=losses[-1])
                if cfg.time_budget_s is not None and time.perf_counter() - start > cfg.time_budget_s:
                    stopped_by = "time_budget"
                    break
                if step >= total:
                    stopped_by = "max_steps" if cfg.max_steps is not None and step == cfg.max_steps else "epochs"
                    break
            if stopped_by == "time_budget":
                break
        student.eval()
        self.details = {
            "student_layers": layers,
            "student_depth": student_depth,
            "teacher_depth": teacher_depth,
            "layer_map": {str(k): v for k, v in layer_map.items()},
            "train_examples": len(enc),
            # the training step's precision: bf16 autocast on CUDA (line "with torch.autocast" below), fp32 on CPU
            "precision": "bf16-autocast" if device.type == "cuda" else "fp32",
            "task_weights": {g.task: round(g.weight, 6) for g in env.train_groups} or None,
            "steps": step,
            "planned_steps": total,
            "epochs_run": round(step / steps_per_epoch, 3),
            "stopped_by": stopped_by,
            "teacher_pass_s": round(targets.seconds, 3),
            "train_s": round(time.perf_counter() - start, 3),
            "teacher_cache_bytes": targets.nbytes(),
            "first_loss": losses[0] if losses else None,
            "final_loss": sum(losses[-10:]) / len(losses[-10:]) if losses else None,
            "loss_curve": losses[:: max(1, len(losses) // 50)],
        }
        structure = {} if self.config.student.model is not None else _remap_structure(candidate.structure, layers)
        return dataclasses.replace(candidate, model=student, structure=structure, device=device)


    def _loss(self, task, student, batch, targets, layer_map: dict[int, int], primary_weight: float,
              device: torch.device) -> torch.Tensor:
        """The task's soft loss, plus hidden-state matching and hard labels when the recipe asks."""
        cfg = self.config
        b = batch.to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            s_out, s_hidden = task.forward(student, b, hidden=bool(layer_map))
        t_out = targets.primary_batch(batch, task.per_token).to(device)
        loss = primary_weight * task.distill_loss(s_out, t_out, b.attention_mask, cfg)
        if layer_map:
            # MSE over real tokens only: padding positions are masked out of both sides
            mask = b.attention_mask.unsqueeze(-1).float()
            denom = mask.sum() * s_hidden[1].shape[-1]
            hidden = sum(
                F.mse_loss(s_hidden[s].float() * mask, targets.hidden_batch(t, batch).to(device).float() * mask,
                           reduction="sum") / denom
                for s, t in layer_map.items()
            )
            loss = loss + cfg.hidden_states.weight * hidden / len(layer_map)
        if cfg.hard_label_weight > 0:
            loss = loss + cfg.hard_label_weight * task.hard_loss(s_out, b)
        return loss


def _epoch(n: int, batch_size: int, groups, rng: random.Random, enc):
    """One epoch of (batch, loss scale). Without task groups: one shuffle of everything, scale 1. With them
    (a shared student), batches are drawn within one task each and shuffled together, and a batch of task t
    is scaled by weight_t * batches / batches_t, so the expected loss is sum_t weight_t * loss_t."""
    if not groups:
        order = list(range(n))
        rng.shuffle(order)
        yield from ((b, 1.0) for b in enc.batches(batch_size, order))
        return
    planned: list[tuple[list[int], float]] = []
    counts = {g.task: math.ceil((g.stop - g.start) / batch_size) for g in groups}
    total = sum(counts.values())
    for g in groups:
        idx = list(range(g.start, g.stop))
        rng.shuffle(idx)
        scale = g.weight * total / counts[g.task]
        planned += [(idx[i : i + batch_size], scale) for i in range(0, len(idx), batch_size)]
    rng.shuffle(planned)
    for index, scale in planned:
        yield enc.batch(index), scale


def _remap_structure(structure: dict, layers: list[int] | None) -> dict:
    """Layer-keyed shape records follow the layers the student kept, renumbered."""
    if not structure or layers is None:
        return dict(structure)
    return {
        key: {str(new): per[str(old)] for new, old in enumerate(layers) if str(old) in per}
        for key, per in structure.items()
    }
