"""Distillery's public Python API.

    import distillery
    model, tokenizer = distillery.load_artifact("out/artifact")
"""

from worker.engine.artifacts import load_artifact

__all__ = ["load_artifact"]
