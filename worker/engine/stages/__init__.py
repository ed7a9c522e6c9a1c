"""Importing this package registers every stage kind."""

from . import distill, evaluate_stage, prune, quantize, structured  # noqa: F401
from .base import Stage, StageEnv, build_stage, register

__all__ = ["Stage", "StageEnv", "build_stage", "register"]
