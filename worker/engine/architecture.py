"""Where things live inside a Hugging Face transformer, for the families the engine supports.

Layer surgery (keeping layers, shrinking heads or feed-forward width) needs to know the module
names; this module is the one place that knows them.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .errors import StageError

# attribute paths from the task model to its list of transformer blocks
_LAYER_PATHS = (
    "encoder.layer",  # BERT, RoBERTa, MiniLM, ELECTRA (base model)
    "bert.encoder.layer",
    "roberta.encoder.layer",
    "electra.encoder.layer",
    "h",  # GPT-2 (base model)
    "transformer.h",
    "transformer.layer",  # DistilBERT
    "distilbert.transformer.layer",
    "layers",  # Llama-style base model
    "model.layers",
)


def _get(obj: object, path: str) -> object | None:
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _set(obj: object, path: str, value: object) -> None:
    head, _, last = path.rpartition(".")
    setattr(_get(obj, head) if head else obj, last, value)


def find_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    for path in _LAYER_PATHS:
        found = _get(model, path)
        if isinstance(found, nn.ModuleList) and len(found) > 0:
            return path, found
    raise StageError(f"cannot find the transformer layers of a {type(model).__name__}")


def num_layers(model: nn.Module) -> int:
    return len(find_layers(model)[1])


def keep_layers(model: nn.Module, keep: list[int]) -> None:
    """Keep only the listed blocks (in order), renumbering what caches index by layer."""
    path, layers = find_layers(model)
    bad = [i for i in keep if i >= len(layers)]
    if bad:
        raise StageError(f"layers {bad} do not exist: the model has {len(layers)} (0..{len(layers) - 1})")
    kept = nn.ModuleList([layers[i] for i in keep])
    for new_idx, block in enumerate(kept):
        for module in block.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_idx
    _set(model, path, kept)
    model.config.num_hidden_layers = len(keep)
    if getattr(model.config, "layer_types", None):  # newer configs list a type per layer
        model.config.layer_types = [model.config.layer_types[i] for i in keep]


def evenly_spaced(total: int, count: int) -> list[int]:
    """`count` layer indices spread over `total`, first and last always kept (as DistilBERT did); a
    one-layer student keeps the last layer, whose output is what the teacher's heads and pooling read."""
    if count >= total:
        return list(range(total))
    if count == 1:
        return [total - 1]
    return sorted({round(i * (total - 1) / (count - 1)) for i in range(count)})


@dataclass(frozen=True)
class ModelInfo:
    """What the dry run needs to know of a model, read from its config alone."""

    model_type: str
    num_layers: int
    num_heads: int
    hidden_size: int
    intermediate_size: int | None
    vocab_size: int
    architectures: tuple[str, ...] = ()
    num_labels: int | None = None  # the classes a classification head has (or would be made with)

    @classmethod
    def from_config(cls, config) -> ModelInfo:
        inter = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None)
        if inter is None and config.model_type == "gpt2":
            inter = 4 * config.hidden_size
        return cls(
            model_type=config.model_type,
            num_layers=config.num_hidden_layers,
            num_heads=config.num_attention_heads,
            hidden_size=config.hidden_size,
            intermediate_size=inter,
            vocab_size=config.vocab_size,
            architectures=tuple(getattr(config, "architectures", None) or ()),
            num_labels=getattr(config, "num_labels", None),
        )
