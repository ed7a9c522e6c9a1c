"""Quantization methods, registered by name: see registry.py. A new method is one module here (a QuantMethod
subclass decorated with @register_method); nothing else changes."""

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
    """Import every module of this package, so each method registers itself: a new method is a new file here
    and nothing else. Lazily, because the methods import torch and recipes are parsed where it is not loaded."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


__all__ = ["NO_QUANTIZATION", "QuantMethod", "at_least_as_coarse", "get_method", "load_builtin_methods",
           "method_names", "register_method", "search_rank", "short_id", "unregister_method"]
