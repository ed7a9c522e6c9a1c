"""The quantization-method registry: one class per method, registered by the name recipes use.

The pattern of torchao's `quantize_` handler registry, keyed by the recipe's `method` string. A method owns
everything that differs between methods: the dry-run check, quantizing a model, rebuilding the quantized
module structure to load a saved artifact, where it serves, its short id in search trial ids and its place
in the search's order of aggressiveness. The recipe, the stage, the artifact loader and the search read this
registry; none of them branches on method names.

Torch-free at import (recipes are parsed where torch is not loaded); implementations import it lazily.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Annotated, ClassVar

from pydantic import AfterValidator

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..architecture import ModelInfo
    from ..recipe import QuantizeConfig

NO_QUANTIZATION = "none"  # the search space's name for "leave the weights as they are"
STATE_DICT_FORMAT = "torch-state-dict"  # saved with torch.save; loads after `rebuild`
SAFETENSORS_FORMAT = "safetensors"  # saved with save_pretrained


class QuantMethod(ABC):
    """A quantization method. Subclass, set the class attributes, decorate with @register_method."""

    name: ClassVar[str]
    short_id: ClassVar[str]  # in search trial ids, e.g. d3-s00-i8d
    rank: ClassVar[int]  # search tie-break among equal objectives: lower keeps more quality ("none" is 0)
    # Methods this one is at least as aggressive as (coarser numbers). The search's order is partial: two
    # methods neither of which lists the other (int8 dynamic and int4 weight-only) are not compared.
    coarser_than: ClassVar[frozenset[str]] = frozenset()
    int8_embeddings: ClassVar[bool] = False  # can also quantize the embedding table (`embeddings: int8`)
    artifact_format: ClassVar[str] = STATE_DICT_FORMAT
    backends: ClassVar[tuple[str, ...]] = ()  # the spec backends `rebuild` accepts; another is refused

    def validate(self, cfg: QuantizeConfig, info: ModelInfo, device: torch.device) -> list[str]:
        """Dry run: raise StageError (field relative to the stage, e.g. "group_size") if the method cannot
        run here; return notes for the report (what the user should know about this choice)."""
        return []

    def serving_device(self, device: torch.device) -> torch.device:
        """Where the quantized model runs, given the job's device."""
        import torch

        return torch.device("cuda") if device.type == "cuda" else torch.device("cpu")

    @abstractmethod
    def quantize(self, model: nn.Module, cfg: QuantizeConfig, device: torch.device, spec: dict) -> nn.Module:
        """Quantize `model` (a private copy: change it in place or return another) and record in `spec`
        everything `rebuild` needs (module names, backend, dtype)."""

    @abstractmethod
    def rebuild(self, model: nn.Module, spec: dict) -> nn.Module:
        """Turn a freshly built float model into the structure `spec` describes, so that the saved state
        dict loads into it. Raise KeyError/ValueError/AttributeError when the spec does not fit the model."""


_METHODS: dict[str, QuantMethod] = {}


def register_method(cls: type[QuantMethod]) -> type[QuantMethod]:
    if cls.name == NO_QUANTIZATION or cls.name in _METHODS:
        raise ValueError(f"quantization method {cls.name!r} is already registered")
    _METHODS[cls.name] = cls()
    return cls


def unregister_method(name: str) -> None:
    """For tests that register a method of their own."""
    _METHODS.pop(name, None)


def method_names() -> list[str]:
    return _loaded_names(include_none=False)


def get_method(name: str) -> QuantMethod:
    if name not in _METHODS:  # the built-ins register on first use (they import torch)
        _loaded_names(include_none=False)
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(f"unknown quantization method {name!r}; known: {', '.join(_METHODS)}") from None


def at_least_as_coarse(finer: str, coarser: str) -> bool:
    """`coarser` quantizes at least as aggressively as `finer` (names of methods, or "none")."""
    if finer in (coarser, NO_QUANTIZATION):
        return True
    return coarser != NO_QUANTIZATION and finer in get_method(coarser).coarser_than


def search_rank(name: str) -> int:
    return 0 if name == NO_QUANTIZATION else get_method(name).rank


def short_id(name: str) -> str:
    return "fp32" if name == NO_QUANTIZATION else get_method(name).short_id


def _loaded_names(include_none: bool) -> list[str]:
    from . import load_builtin_methods  # the built-ins import torch: only once a recipe is validated

    load_builtin_methods()
    return [NO_QUANTIZATION, *_METHODS] if include_none else list(_METHODS)


def _check_method(value: str) -> str:
    return _check(value, include_none=False)


def _check_search_method(value: str) -> str:
    return _check(value, include_none=True)


def _check(value: str, include_none: bool) -> str:
    names = _loaded_names(include_none)
    if value not in names:
        raise ValueError(f"unknown quantization method {value!r}; known: {', '.join(names)}")
    return value


class _NamesInSchema:
    """The registered names as the JSON Schema's `enum`, read when the schema is made (so the OpenAPI document
    lists every method registered by then)."""

    def __init__(self, include_none: bool) -> None:
        self.include_none = include_none

    def __get_pydantic_json_schema__(self, schema, handler) -> dict:
        return {"type": "string", "enum": _loaded_names(self.include_none)}


# A quantize stage's method, and a search space's quantization ("none" included): checked against the
# registry when a recipe is parsed.
MethodName = Annotated[str, AfterValidator(_check_method), _NamesInSchema(include_none=False)]
SearchMethodName = Annotated[str, AfterValidator(_check_search_method), _NamesInSchema(include_none=True)]
