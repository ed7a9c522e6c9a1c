"""What a model folder must be before anything loads it: config.json present, no custom code (auto_map, or a
Python file anywhere in the folder), weights present, and any pickle readable by the restricted unpickler.

The checks read files through an opener, so that a folder a user may still change is checked through the
no-follow reader (safe_files.ModelFolder) and a folder of ours (a copy, an unpacked upload, a hub snapshot)
through plain paths, with the same rules.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Collection
from pathlib import Path
from typing import BinaryIO

import torch

from .errors import ModelReferenceError, UnsafeInputError

PICKLE_WEIGHTS = ("pytorch_model.bin", "model.pt", "model.pth")
SAFE_INDEX = "model.safetensors.index.json"
PICKLE_INDEX = "pytorch_model.bin.index.json"  # a sharded pickle checkpoint's shards
MAX_CONFIG_BYTES = 16 * 1024 * 1024  # a config or an index is kilobytes; more is not one

Opener = Callable[[str], BinaryIO]


def shards_in(raw: bytes) -> list[str] | None:
    """The shard files an index names (plain names beside it); None if it is not a usable index."""
    try:
        weight_map = json.loads(raw).get("weight_map")
    except (ValueError, AttributeError, RecursionError):
        return None
    if not isinstance(weight_map, dict) or not weight_map:
        return None
    names = set(weight_map.values())
    if not all(isinstance(n, str) and n and Path(n).name == n for n in names):
        return None
    return sorted(names)


def index_shards(index: Path) -> list[str] | None:
    try:
        return shards_in(index.read_bytes())
    except OSError:
        return None


def _read_small(open_file: Opener, name: str) -> bytes:
    with open_file(name) as fh:
        raw = fh.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ModelReferenceError(f"{name} is larger than {MAX_CONFIG_BYTES} bytes; not a model config")
    return raw


def refuse_custom_code(raw: bytes, name: str) -> None:
    try:
        cfg = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        first = str(exc).splitlines()[0][:200] if str(exc) else "too deeply nested"
        raise ModelReferenceError(f"{name} is not valid JSON: {first}") from None
    if isinstance(cfg, dict) and ("auto_map" in cfg or "custom_pipelines" in cfg):
        raise UnsafeInputError(f"{name} names custom code (auto_map); Distillery never runs code shipped with a model")


def check_pickle(source: Path | BinaryIO, name: str | None = None) -> None:
    """Read a pickled checkpoint with the restricted unpickler; one that would run code is refused."""
    name = name or (source.name if isinstance(source, Path) else "checkpoint")
    try:
        torch.load(source, map_location="cpu", weights_only=True, mmap=False)
    except pickle.UnpicklingError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "unsupported content"
        raise UnsafeInputError(
            f"{name} is a pickle that would run code or load non-tensor objects; refused ({first[:200]})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ModelReferenceError(f"{name} is not a readable PyTorch checkpoint: {exc}") from None


def check_model_files(names: Collection[str], open_file: Opener, shown: str) -> None:
    """names: every file in the folder, relative ("a/b.json"); open_file opens one of them for reading."""
    if "config.json" not in names:
        raise ModelReferenceError(f"{shown} has no config.json; expected a Hugging Face model directory")
    for name in ("config.json", "tokenizer_config.json"):
        if name in names:
            refuse_custom_code(_read_small(open_file, name), name)
    # In sub-folders too: nothing here imports them, but a loader that imports a sub-module would run them.
    if code := sorted(n for n in names if n.endswith(".py")):
        raise UnsafeInputError(f"{shown} contains Python files ({', '.join(code[:3])}); models with custom code "
                               "are refused")
    if any("/" not in n and n.endswith(".safetensors") for n in names):
        return
    pickles = [n for n in PICKLE_WEIGHTS if n in names]
    if not pickles and PICKLE_INDEX in names:
        pickles = [n for n in shards_in(_read_small(open_file, PICKLE_INDEX)) or () if n in names]
    if not pickles:
        raise ModelReferenceError(f"{shown} has no weights (model.safetensors or pytorch_model.bin)")
    for name in pickles:
        with open_file(name) as fh:
            check_pickle(fh, name)


def check_model_dir(path: Path, shown: str | None = None) -> None:
    """A folder read by path: one of ours (a verified copy, an unpacked upload) or a hub snapshot, whose files
    are links into the cache's blobs. `shown` names the folder in messages (the user's own path)."""
    names = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    check_model_files(names, lambda name: (path / name).open("rb"), shown or str(path))
