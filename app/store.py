"""The artifact store: where uploads and job outputs live, behind one small interface.

Keys are POSIX paths relative to the store's root, exactly the layout of data_dir (uploads/datasets/<id>/<file>,
uploads/models/<id>/..., jobs/<id>/model.tar), so the default LocalStore is today's directory and the database
holds keys, never a machine's absolute paths. S3Store keeps the same keys in an S3-compatible bucket (AWS S3,
MinIO, any endpoint URL), so that API and workers on different machines share nothing but the database, the
broker and the bucket. Each machine keeps a local copy of what it uses under its own data_dir at the same
relative path (see `materialise`): a worker's data_dir is a cache of the store (bounded: worker/input_cache.py).
The S3 implementation is in app/s3store.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from .s3store import S3Store, check_key
from .settings import Settings
from .storage import LocalStore, StoreError

__all__ = ["S3Store", "Store", "check_key", "fetch_inputs", "get_store", "materialise", "register_store_backend",
           "store_backend_names", "store_inputs", "unregister_store_backend", "upload_dir"]


class Store(Protocol):
    def put_file(self, local: Path, key: str) -> None: ...
    def get_file(self, key: str, local: Path) -> Path: ...
    def size(self, key: str) -> int | None: ...  # None: no such object
    def open_range(self, key: str, start: int, end: int) -> Iterator[bytes]: ...  # [start, end), chunked
    def delete(self, key: str) -> None: ...
    def list(self, prefix: str) -> Iterator[tuple[str, int, datetime]]: ...  # (key, size, last modified)
    def presign(self, key: str, filename: str) -> str | None: ...  # None: the API streams it itself
    # The object's path when the store is this machine's own directory (nothing to fetch or push), else None.
    def local_path(self, key: str) -> Path | None: ...
    def read_bytes(self, key: str) -> bytes | None: ...  # a small object (a checkpoint marker); None: absent
    # Uploads begun before the time and never completed: (key, upload id); and aborting them (gc).
    def incomplete_uploads(self, initiated_before: datetime) -> list[tuple[str, str]]: ...
    def abort_incomplete_uploads(self, initiated_before: datetime) -> list[str]: ...


_LOCK = threading.Lock()


@lru_cache(maxsize=16)
def _s3_store(*args) -> S3Store:
    return S3Store(*args)


StoreFactory = Callable[[Settings], Store]
_BACKENDS: dict[str, StoreFactory] = {}


def register_store_backend(name: str, factory: StoreFactory) -> None:
    """A store backend, chosen by `DISTILLERY_STORE=<name>`: a factory from the settings to a Store."""
    _BACKENDS[name] = factory


def unregister_store_backend(name: str) -> None:
    _BACKENDS.pop(name, None)


def store_backend_names() -> list[str]:
    return list(_BACKENDS)


def _local(settings: Settings) -> Store:
    return LocalStore(settings.data_dir)


def _s3(settings: Settings) -> Store:
    # One client per configuration: making one costs milliseconds, and boto3's default session is not
    # safe to make clients from in several threads at once. A client itself is thread-safe.
    with _LOCK:
        return _s3_store(settings.s3_bucket, settings.s3_prefix, settings.s3_endpoint_url, settings.s3_presign,
                         settings.s3_multipart_threshold, settings.s3_part_size,
                         settings.s3_public_endpoint_url, settings.s3_presign_expiry_seconds)


register_store_backend("local", _local)
register_store_backend("s3", _s3)


def get_store(settings: Settings) -> Store:
    try:
        factory = _BACKENDS[settings.store]
    except KeyError:
        raise StoreError(f"DISTILLERY_STORE={settings.store!r} is not a store backend "
                         f"(known: {', '.join(_BACKENDS)})") from None
    return factory(settings)


def upload_dir(store: Store, local: Path, prefix: str) -> None:
    """Every file under `local` to prefix + its relative path (an unpacked model directory)."""
    for path in sorted(local.rglob("*")):
        if path.is_file() and not path.is_symlink():
            store.put_file(path, prefix + path.relative_to(local).as_posix())


def materialise(store: Store, data_dir: Path, key: str, *, is_dir: bool = False) -> Path:
    """The local copy of a store key (a file, or a directory prefix) at data_dir/key, fetched if missing.

    Uploads are immutable (their keys carry their id), so a copy of the right size is reused across jobs. Keys
    that a later attempt rewrites (a job's checkpoints) go through worker/checkpoints.py's fetch instead, which
    compares each checkpoint's marker, not sizes."""
    if (here := store.local_path(key)) is not None:
        return here  # the store is this directory: nothing to fetch
    local = data_dir / check_key(key)
    if not is_dir:
        if not (local.is_file() and local.stat().st_size == store.size(key)):
            store.get_file(key, local)
        return local
    prefix = key.rstrip("/") + "/"
    found = False
    for sub, size, _ in store.list(prefix):
        found = True
        dest = data_dir / sub
        if not (dest.is_file() and dest.stat().st_size == size):
            store.get_file(sub, dest)
    if not found:
        raise FileNotFoundError(key)
    return local


def store_inputs(recipe: dict) -> list[tuple[str, bool]]:
    """The store keys a job's recipe reads, as (key, is_dir): its relative paths. Absolute paths are files on
    every worker's own disk (a teacher registered by path with the local store: with S3 its registration copies
    it into the store), and hub or bundled teachers need no store."""
    data = recipe.get("data") or {}
    tasks = [p for spec in (recipe.get("tasks") or {}).values() for p in (spec.get("train"), spec.get("eval"))]
    keys = [(p, False) for p in [data.get("train"), *(data.get("eval") or {}).values(), *tasks]
            if p and not Path(p).is_absolute()]
    teacher = recipe.get("teacher") or {}
    path = teacher.get("path") if teacher.get("source") in ("local", "archive") else None
    if path and not Path(path).is_absolute():
        keys.append((path, teacher["source"] == "local"))
    return keys


def fetch_inputs(store: Store, data_dir: Path, recipe: dict) -> None:
    """Make every store key the recipe reads present under data_dir, where the engine (base_dir) finds it."""
    for key, is_dir in store_inputs(recipe):
        materialise(store, data_dir, key, is_dir=is_dir)
