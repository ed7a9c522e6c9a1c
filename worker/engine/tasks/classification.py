"""Sequence classification: soft-label distillation at a temperature, accuracy and macro-F1."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..bootstrap import mean_of
from ..data import Dataset
from ..errors import DataError
from ..metrics import accuracy, macro_f1
from .base import Batch, Task, TaskScore, encode, run_batches


def soft_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) at a temperature, scaled by T^2 so gradients keep their size (Hinton 2015)."""
    t = F.log_softmax(teacher.float() / temperature, dim=-1)
    s = F.log_softmax(student.float() / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2


class SequenceClassification(Task):
    name = "sequence-classification"
    train_kinds = frozenset({"text", "classification"})
    eval_kinds = frozenset({"text", "classification"})
    head_suffixes = ("ForSequenceClassification",)

    def auto_class(self) -> type:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification

    def head_kwargs(self, teacher_config) -> dict:
        return {"id2label": dict(teacher_config.id2label), "label2id": dict(teacher_config.label2id)}

    def labels_for(self, model: nn.Module, dataset: Dataset) -> list[int] | None:
        return self.label_ids(model.config, dataset) if dataset.kind == "classification" else None

    def check_labels(self, config, dataset: Dataset, field: str) -> None:
        if dataset.kind == "classification":
            try:
                self.label_ids(config, dataset)
            except DataError as exc:
                raise DataError(exc.message, field=field) from None

    @staticmethod
    def label_ids(config, dataset: Dataset) -> list[int]:
        """Each row's label as the model's class id: a name from its label2id, or an id below num_labels."""
        label2id = {str(k): int(v) for k, v in (config.label2id or {}).items()}
        num = config.num_labels
        out = []
        for i, label in enumerate(dataset.labels()):
            if isinstance(label, str) and not label.lstrip("-").isdigit():
                if label not in label2id:
                    raise DataError(f"{dataset.where(i)}: label {label!r} is not one of the model's labels "
                                    f"{sorted(label2id)}")
                out.append(label2id[label])
                continue
            value = int(label)
            if not 0 <= value < num:
                raise DataError(f"{dataset.where(i)}: label {value} is outside the model's classes 0..{num - 1}")
            out.append(value)
        return out

    def forward(self, model: nn.Module, batch: Batch, hidden: bool = False):
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=hidden)
        return out.logits.float(), (out.hidden_states if hidden else None)

    def distill_loss(self, student, teacher, mask, cfg) -> torch.Tensor:
        return soft_kl(student, teacher, cfg.temperature)

    def hard_loss(self, student, batch: Batch) -> torch.Tensor | None:
        return None if batch.labels is None else F.cross_entropy(student, batch.labels)

    def eval_outputs(self, model, tokenizer, dataset: Dataset, batch_size, max_length, device):
        enc = encode(tokenizer, dataset.texts(), max_length)
        logits = torch.cat([p.float().cpu() for _, p in run_batches(self, model, enc, batch_size, device)])
        out = {"pred": logits.argmax(-1)}
        labels = self.labels_for(model, dataset)
        if labels is not None:
            out["gold"] = torch.tensor(labels)
        return out

    def score(self, outputs, reference, dataset: Dataset) -> TaskScore:
        metrics = {"agreement": accuracy(outputs["pred"], reference["pred"])}
        samplers = {"agreement": mean_of((outputs["pred"] == reference["pred"]).numpy())}
        if "gold" in outputs:
            metrics["accuracy"] = accuracy(outputs["pred"], outputs["gold"])
            metrics["macro_f1"] = macro_f1(outputs["pred"], outputs["gold"])
            samplers["accuracy"] = mean_of((outputs["pred"] == outputs["gold"]).numpy())
            return TaskScore(metrics, primary="accuracy", resamplers=samplers)
        return TaskScore(metrics, primary="agreement", resamplers=samplers)
