"""A pre-flight estimate of a job's peak memory, from the dry run's plan alone (configs and data, no weights).

The service compares it with what a worker has, so that a recipe too large for the machine is refused at
submit time, not killed by the kernel an hour in. It is an estimate (about +-30 %: allocator overhead,
tokenizer lengths and library buffers are not modelled), built from the terms that dominate:

- weights, fp32: 4 bytes per parameter, counted from the config;
- training (distill): the student's weights, gradients and AdamW's two moments (16 bytes per parameter),
  the teacher beside it, and the activations kept for the backward pass, per layer about
  b*s*(10h + 2i) floats plus 3 attention maps of b*a*s*s floats (Korthikanti et al., 2022, in fp32);
- the teacher's cached targets: pooled outputs or logits per example, top-k logits per token for causal LMs,
  fp16 hidden states per mapped layer and token;
- language-model heads: b*s*vocab logits, twice (softmax and its gradient).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .architecture import ModelInfo
from .data import Dataset
from .recipe import DistillConfig

FP32 = 4
CHARS_PER_TOKEN = 4  # English subword text; only used to bound sequence lengths below max_length
GB = 1024**3


@dataclass
class MemoryEstimate:
    peak_bytes: int
    where: str  # "teacher" or "stages.<i>": the step that peaks, for the error's field
    what: str  # that step in words
    parts: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        items = ", ".join(f"{name} {size / GB:.2f} GB" for name, size in self.parts.items() if size)
        return f"about {self.peak_bytes / GB:.2f} GB at {self.what} ({items})"


def parameters(info: ModelInfo, positions: int = 512) -> int:
    """Parameters of an encoder or decoder of this shape: embeddings, then per layer attention (4 h*h + 4 h),
    feed-forward (2 h*i + h + i) and two layer norms (4 h)."""
    h, i = info.hidden_size, info.intermediate_size or 4 * info.hidden_size
    per_layer = 4 * h * h + 4 * h + 2 * h * i + h + i + 4 * h
    return (info.vocab_size + positions) * h + info.num_layers * per_layer + 2 * h


def sequence_length(data: Dataset | None, max_length: int) -> int:
    """Tokens per padded batch: the longest text's estimated length, capped by the recipe's max_length."""
    if data is None or not len(data):
        return max_length
    longest = max(len(t) for t in data.texts())
    return max(8, min(max_length, longest // CHARS_PER_TOKEN + 2))


def activations(info: ModelInfo, batch: int, seq: int, task: str) -> int:
    h, i = info.hidden_size, info.intermediate_size or 4 * info.hidden_size
    per_layer = batch * seq * (10 * h + 2 * i) + 3 * batch * info.num_heads * seq * seq
    head = 2 * batch * seq * info.vocab_size if task == "causal-lm" else 0
    return FP32 * (info.num_layers * per_layer + batch * seq * h + head)


def teacher_targets(config: DistillConfig, teacher: ModelInfo, student: ModelInfo, data: Dataset, seq: int,
             task: str) -> int:
    rows = len(data.texts())
    # causal LMs: top-k values and int64 indices per token; the others: one pooled vector or logits per row
    per_row = seq * config.logit_top_k * (FP32 + 8) if task == "causal-lm" else teacher.hidden_size * FP32
    primary = rows * per_row
    hidden = 0
    if config.hidden_states is not None:
        layers = len(config.hidden_states.layer_map or {}) or student.num_layers
        hidden = layers * rows * seq * teacher.hidden_size * 2  # fp16
    return primary + hidden


@dataclass(frozen=True)
class MemoryInputs:
    """What a stage's memory hook (Stage.memory_parts) may use: the shapes around it and the data it reads."""

    teacher: ModelInfo
    before: ModelInfo  # the candidate's shape when the stage starts
    after: ModelInfo  # and when it ends
    seq: int  # tokens per training batch
    task: str
    train: Dataset | None
    teacher_weights: int  # bytes


def estimate(plan) -> MemoryEstimate:
    """The peak over the job's steps: evaluating the teacher, then each stage with its model shapes (each stage
    kind says what it holds: Stage.memory_parts)."""
    from .stages.base import build_stage

    recipe, teacher = plan.recipe, plan.info
    task = recipe.task
    seq = sequence_length(plan.env.train, recipe.max_length)
    eval_seq = max((sequence_length(d, recipe.max_length) for d in plan.env.eval.values()), default=seq)
    eval_batch = recipe.evaluate.throughput_batch
    teacher_w = FP32 * parameters(teacher)
    best = MemoryEstimate(teacher_w + activations(teacher, eval_batch, eval_seq, task) // 8, "teacher",
                          "evaluating the teacher",
                          {"teacher weights": teacher_w,
                           "inference activations": activations(teacher, eval_batch, eval_seq, task) // 8})
    current = teacher
    for index, (config, after) in enumerate(zip(recipe.stages, plan.infos, strict=False)):
        inputs = MemoryInputs(teacher, current, after, seq, task, plan.env.train, teacher_w)
        parts = build_stage(config, index).memory_parts(inputs)
        parts.setdefault("teacher weights", teacher_w)  # kept for the candidate's evaluation against it
        total = sum(parts.values())
        if total > best.peak_bytes:
            best = MemoryEstimate(total, f"stages.{index}", f"stage {index} ({config.kind})", parts)
        current = after
    return best
