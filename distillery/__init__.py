"""Distillery's public Python API.

    import distillery
    model, tokenizer = distillery.load_artifact("out/artifact")      # loads torch

    from distillery import Client, AsyncClient                       # the service's client; no torch
    client = Client("http://127.0.0.1:8000", api_key="dk_...")

Names are imported on first use (PEP 562), so `import distillery` and the client never load torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from worker.engine.artifacts import load_artifact

    from .client import AsyncClient, Client, DistilleryError

_EXPORTS = {
    "load_artifact": "worker.engine.artifacts",
    "Client": "distillery.client",
    "AsyncClient": "distillery.client",
    "DistilleryError": "distillery.client",
}
__all__ = ["AsyncClient", "Client", "DistilleryError", "load_artifact"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
