"""The task interface: how a task loads its model, batches data, builds distillation targets and scores.

A task's `forward` returns the "primary" output distillation matches (pooled embeddings, class
logits or token logits) and, on request, the hidden states.
"""

from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from ..bootstrap import Resampler
from ..data import Dataset, DatasetKind
from ..errors import ModelReferenceError, StageError, UnsafeInputError
from ..references import ResolvedModel, unsafe_pickle_message


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    index: list[int]
    labels: torch.Tensor | None = None

    def to(self, device: torch.device) -> Batch:
        labels = None if self.labels is None else self.labels.to(device)
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.index, labels)


@dataclass
class Encoded:
    """Texts tokenised once; batches are padded on the fly to their own longest example."""

    ids: list[list[int]]
    pad_id: int
    labels: list[int] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, index: Sequence[int]) -> Batch:
        width = max(len(self.ids[i]) for i in index)
        input_ids = torch.full((len(index), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(index), width), dtype=torch.long)
        for row, i in enumerate(index):
            seq = self.ids[i]
            input_ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        labels = None if self.labels is None else torch.tensor([self.labels[i] for i in index])
        return Batch(input_ids, mask, list(index), labels)

    def batches(self, size: int, order: Sequence[int] | None = None) -> Iterator[Batch]:
        order = list(range(len(self.ids))) if order is None else list(order)
        for start in range(0, len(order), size):
            yield self.batch(order[start : start + size])


@dataclass
class TaskScore:
    metrics: dict[str, float]
    primary: str
    higher_is_better: bool = True
    extra: dict = field(default_factory=dict)
    # metric -> how to recompute it on a resample of the examples (bootstrap.py); a metric without one
    # gets no interval
    resamplers: dict[str, Resampler] = field(default_factory=dict)

    @property
    def value(self) -> float:
        return self.metrics[self.primary]


def ensure_pad_token(tokenizer) -> None:
    # GPT-2 ships without a pad token; padding with EOS is the usual answer (the mask hides it).
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ModelReferenceError("the tokenizer has neither a pad token nor an end-of-text token")
        tokenizer.pad_token = tokenizer.eos_token


def encode(tokenizer, texts: Sequence[str], max_length: int, labels: list[int] | None = None) -> Encoded:
    ensure_pad_token(tokenizer)
    out = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)
    return Encoded(ids=out["input_ids"], pad_id=tokenizer.pad_token_id, labels=labels)


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1)


class Task(ABC):
    name: ClassVar[str]
    train_kinds: ClassVar[frozenset[DatasetKind]]
    eval_kinds: ClassVar[frozenset[DatasetKind]]
    per_token: ClassVar[bool] = False  # is the primary output one row per token (causal LM)?
    # checkpoint classes that carry this task's trained head; empty: any checkpoint will do
    head_suffixes: ClassVar[tuple[str, ...]] = ()

    def check_architectures(self, architectures: tuple[str, ...]) -> None:
        """Dry-run check from config.json alone: a checkpoint saved without this task's head would load
        with a randomly initialised one (Task.load refuses that too, but only after loading weights)."""
        if self.head_suffixes and architectures and not any(a.endswith(self.head_suffixes) for a in architectures):
            raise ModelReferenceError(
                f"the teacher is a {architectures[0]} checkpoint: task {self.name} needs one with a trained head "
                f"({' or '.join('*' + s for s in self.head_suffixes)})", field="teacher")

    @abstractmethod
    def auto_class(self) -> type: ...

    def load(self, resolved: ResolvedModel, dtype: torch.dtype | None = None, *,
             head_like=None) -> tuple[nn.Module, object]:
        """Load the model and tokenizer. `head_like` (a distillation student's teacher config): the checkpoint
        may lack this task's head, which then starts untrained and shaped like the teacher's (distillation
        trains it); the body must still be complete."""
        from transformers import AutoTokenizer

        kw = {"revision": resolved.revision, "trust_remote_code": False}
        if resolved.local_dir is not None or resolved.snapshot is not None:
            kw["local_files_only"] = True  # exactly the files the reference checks saw
        try:
            tokenizer = AutoTokenizer.from_pretrained(resolved.name_or_path, **kw)
            model, info = self.auto_class().from_pretrained(
                resolved.name_or_path, output_loading_info=True, dtype=dtype or torch.float32, **kw,
                **(self.head_kwargs(head_like) if head_like is not None else {}),
            )
        except pickle.UnpicklingError as exc:
            # transformers reads pickles with weights_only=True: this is a checkpoint that would run code,
            # reached without the reference checks (e.g. a hub model downloaded by this very load)
            raise UnsafeInputError(unsafe_pickle_message(resolved, exc)) from None
        except (OSError, ValueError, KeyError) as exc:
            where = resolved.where
            text = str(exc).splitlines()[0][:300]
            if resolved.revision and ("offline" in str(exc).lower() or "connect" in str(exc).lower()
                                      or "cache" in str(exc).lower()):
                text = "not in the local Hugging Face cache and the hub cannot be reached (offline)"
            raise ModelReferenceError(f"cannot load {where} for task {self.name}: {text}") from None
        self.check_loaded(model, info, fresh_head=head_like is not None)
        ensure_pad_token(tokenizer)
        model.eval()
        return model, tokenizer

    def head_kwargs(self, teacher_config) -> dict:
        """from_pretrained overrides that shape a fresh head like the teacher's (classification: its classes)."""
        return {}

    def check_loaded(self, model: nn.Module, info: dict, fresh_head: bool = False) -> None:
        """Refuse a model whose weights were partly initialised at random (e.g. a task head the
        checkpoint lacks): its outputs would be noise. The unused pooler of encoders is allowed, and with
        `fresh_head` (a student about to be trained) everything outside the base model."""
        missing = [k for k in info.get("missing_keys", []) if "pooler" not in k]
        prefix = getattr(model, "base_model_prefix", "")
        body = getattr(model, prefix, None) if prefix else None
        # Only a model that wraps its base model has weights outside it (the head); a bare base model
        # (AutoModel: BertModel's keys have no "bert." prefix) is all body, so every missing key counts.
        if fresh_head and body is not None and body is not model:
            missing = [k for k in missing if k.startswith(prefix + ".")]
        if missing:
            raise ModelReferenceError(
                f"the checkpoint has no weights for {', '.join(sorted(missing)[:3])}"
                f"{' and more' if len(missing) > 3 else ''}: it is not a trained {self.name} model"
            )

    def check_dataset(self, dataset: Dataset, role: str, field: str) -> None:
        allowed = self.train_kinds if role == "train" else self.eval_kinds
        if dataset.kind not in allowed:
            raise StageError(
                f"{dataset.path.name} is a {dataset.kind} set; task {self.name} takes "
                f"{' or '.join(sorted(allowed))} sets for {role}",
                field=field,
            )

    def labels_for(self, model: nn.Module, dataset: Dataset) -> list[int] | None:
        return None

    def check_labels(self, config, dataset: Dataset, field: str) -> None:
        """Dry-run check of a set's labels against the model's config; only tasks that read labels check."""
        return None

    @abstractmethod
    def forward(self, model: nn.Module, batch: Batch, hidden: bool = False):
        """Return (primary, hidden_states or None)."""

    @abstractmethod
    def distill_loss(self, student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, cfg) -> torch.Tensor:
        ...

    def hard_loss(self, student: torch.Tensor, batch: Batch) -> torch.Tensor | None:
        return None

    def compact_target(self, primary: torch.Tensor, cfg) -> torch.Tensor:
        """What is kept of the teacher's output per batch (the causal LM keeps only its top-k logits)."""
        return primary

    @abstractmethod
    def eval_outputs(self, model: nn.Module, tokenizer, dataset: Dataset, batch_size: int,
                     max_length: int, device: torch.device) -> dict[str, torch.Tensor]: ...

    def prepare_reference(self, reference: dict, dataset: Dataset, seed: int) -> dict:
        """Once per eval set, from the teacher's outputs: what scoring every candidate shares (a split, a probe
        trained on the teacher). `score` then gets this as `reference`, the teacher's own score included."""
        return reference

    @abstractmethod
    def score(self, outputs: dict[str, torch.Tensor], reference: dict,
              dataset: Dataset) -> TaskScore: ...

    def example_input(self, tokenizer, batch_size: int, max_length: int) -> dict[str, torch.Tensor]:
        text = "Distillery measures how fast a compressed model answers a typical request."
        enc = tokenizer([text] * batch_size, truncation=True, max_length=max_length, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


@torch.no_grad()
def run_batches(task: Task, model: nn.Module, enc: Encoded, batch_size: int, device: torch.device):
    """Yield (batch, primary) over an encoded set, in order, for evaluation."""
    for batch in enc.batches(batch_size):
        b = batch.to(device)
        primary, _ = task.forward(model, b)
        yield b, primary
