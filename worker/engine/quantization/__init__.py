"""Quantization methods, registered by name: see registry.py. A new method is one module here (a QuantMethod
subclass decorated with @register_method) plus its import below; nothing else changes."""

from .registry import (
    NO_QUANTIZATION,
    QuantMethod,
    at_least_as_coarse,
    get_method,
    method_names,
    register_method,
    search_rank,
    short_id,
    unregister_method,
)


def load_builtin_methods() -> None:
    """Import the built-in methods (they import torch, so the recipe calls this only when validating)."""
    from . import cast, int4_weight_only, int8_dynamic, int8_weight_only  # noqa: F401


__all__ = ["NO_QUANTIZATION", "QuantMethod", "at_least_as_coarse", "get_method", "load_builtin_methods",
           "method_names", "register_method", "search_rank", "short_id", "unregister_method"]
