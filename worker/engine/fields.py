"""The base model and field types that every recipe and request body is built from.

Hostile input is refused here by class, naming the field, before anything reads it: no NUL byte and no string
longer than a path may be (the OS and PostgreSQL refuse them later, as a server error), no `Infinity` or `NaN`
(JSON parsers accept them; the model would train on them), no integer that torch, numpy or the database
cannot hold, and no hub id that huggingface_hub would refuse at download time.
Pydantic only (the API imports this without the engine's heavy modules).
"""

from __future__ import annotations

from typing import Annotated, Any

from huggingface_hub.utils import HFValidationError, validate_repo_id
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

MAX_TEXT = 4096  # PATH_MAX on Linux: no path, id or name in a recipe is longer
NAME_MAX = 255  # bytes in one component of a path, on Linux
MAX_HUB_ID = 96 * 2 + 1  # huggingface_hub: a namespace and a name of at most 96 characters each
SEED_MAX = 2**32 - 1  # numpy's seeds are 32-bit
INT_LIMIT = 2**63 - 1  # torch's int64; also a PostgreSQL bigint
MAX_LAYERS = 1024  # layer indices and counts (the deepest public models have under 200)
MAX_STEPS = 100_000_000  # training steps; the job's progress rows hold 32-bit integers
MAX_EXAMPLES = 10_000_000  # rows a dataset may hold is far below (worker/engine/data.py)
MAX_ITEMS = 64  # entries of a recipe's lists and maps (stages, tasks, eval sets, a search axis)


def _refuse_hostile(value: Any) -> None:
    """Walk what a field holds (dict keys too); nested models check their own fields."""
    if isinstance(value, str):
        if "\0" in value:
            raise ValueError("contains a NUL byte, which no path, id or name may hold")
    elif isinstance(value, bool | BaseModel):
        return
    elif isinstance(value, int):
        if not -INT_LIMIT - 1 <= value <= INT_LIMIT:
            raise ValueError("integer out of range (64-bit)")
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_hostile(key)
            _refuse_hostile(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _refuse_hostile(item)


class Strict(BaseModel):
    """Unknown keys, non-finite floats and over-long strings are refused in every subclass; the validator below
    refuses NUL bytes and out-of-range integers in every field, whatever its type."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, str_max_length=MAX_TEXT)

    @field_validator("*", mode="after")
    @classmethod
    def _no_hostile_values(cls, value: Any) -> Any:
        _refuse_hostile(value)
        return value


def _valid_repo_id(value: str) -> str:
    try:
        validate_repo_id(value)
    except HFValidationError as exc:  # the hub's own rule, said as the hub says it
        raise ValueError(str(exc)) from None
    return value


# ASCII only (a JSON schema's \w would admit any letter); the pattern documents the shape, the hub's own
# validator (no "--" or "..", no ".git" ending) has the last word.
HubId = Annotated[str, Field(min_length=1, max_length=MAX_HUB_ID, pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?$",
                             examples=["sentence-transformers/all-MiniLM-L6-v2"]),
                  AfterValidator(_valid_repo_id)]
# A pinned commit, so that a run is reproducible and a moved branch cannot change the teacher.
Revision = Annotated[str, Field(pattern=r"^[0-9a-f]{40}$", description="a full 40-character commit sha")]


def _fits_the_os(value: str) -> str:
    if any(len(part.encode()) > NAME_MAX for part in value.split("/")):
        raise ValueError(f"a path component is longer than {NAME_MAX} bytes, which no file system allows")
    return value


UserPath = Annotated[str, Field(min_length=1, max_length=MAX_TEXT), AfterValidator(_fits_the_os)]
Seed = Annotated[int, Field(ge=0, le=SEED_MAX, description="seeds torch, numpy and random (0..2**32-1)")]
LayerIndex = Annotated[int, Field(ge=0, le=MAX_LAYERS)]
LayerCount = Annotated[int, Field(ge=1, le=MAX_LAYERS)]
