"""The artifact store: where uploads and job outputs live, behind one small interface.

Keys are POSIX paths relative to the store's root, exactly the layout of data_dir (uploads/datasets/<id>/<file>,
uploads/models/<id>/..., jobs/<id>/model.tar), so the default LocalStore is today's directory and the database
holds keys, never a machine's absolute paths. S3Store keeps the same keys in an S3-compatible bucket (AWS S3,
MinIO, any endpoint URL), so that API and workers on different machines share nothing but the database, the
broker and the bucket. Each machine keeps a local copy of what it uses under its own data_dir at the same
relative path (see `materialise`): a worker's data_dir is a cache of the store.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Iterator
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from .settings import Settings
from .storage import CHUNK, LocalStore, StoreError

MIN_PART = 5 * 1024**2  # S3's smallest part (every part but the last)


class Store(Protocol):
    def put_file(self, local: Path, key: str) -> None: ...
    def get_file(self, key: str, local: Path) -> Path: ...
    def size(self, key: str) -> int | None: ...  # None: no such object
    def open_range(self, key: str, start: int, end: int) -> Iterator[bytes]: ...  # [start, end), chunked
    def delete(self, key: str) -> None: ...
    def list(self, prefix: str) -> Iterator[tuple[str, int, datetime]]: ...  # (key, size, last modified)
    def presign(self, key: str, filename: str) -> str | None: ...  # None: the API streams it itself


def check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or ".." in parts or "" in parts[:-1]:
        raise StoreError(f"{key!r} is not a relative key inside the store")
    return key


class S3Store:
    """boto3 on any S3-compatible endpoint; large files go up in parts (upload_file with a TransferConfig)."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None, presign: bool = False,
                 multipart_threshold: int = 64 * 1024**2) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket, self.prefix, self.presign_urls = bucket, prefix, presign
        # path-style addressing: MinIO and moto serve buckets under the path, not as a subdomain
        config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"})
        self.client = boto3.client("s3", endpoint_url=endpoint_url, config=config)
        self.transfer = TransferConfig(multipart_threshold=multipart_threshold,
                                       multipart_chunksize=max(multipart_threshold, MIN_PART))

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def put_file(self, local: Path, key: str) -> None:
        # An object appears whole or not at all (a multipart upload is invisible until completed).
        self.client.upload_file(str(local), self.bucket, self._key(key), Config=self.transfer)

    def get_file(self, key: str, local: Path) -> Path:
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{secrets.token_hex(6)}.part")
        try:
            self.client.download_file(self.bucket, self._key(key), str(tmp), Config=self.transfer)
            os.replace(tmp, local)  # readers of the cache never see half a file
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            if _not_found(exc):
                raise FileNotFoundError(key) from None
            raise
        return local

    def size(self, key: str) -> int | None:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])
        except Exception as exc:
            if _not_found(exc):
                return None
            raise

    def open_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        if end <= start:
            return
        body = self.client.get_object(Bucket=self.bucket, Key=self._key(key), Range=f"bytes={start}-{end - 1}")["Body"]
        try:
            yield from body.iter_chunks(CHUNK)
        finally:
            body.close()

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def list(self, prefix: str) -> Iterator[tuple[str, int, datetime]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                yield obj["Key"][len(self.prefix):], int(obj["Size"]), obj["LastModified"]

    def presign(self, key: str, filename: str) -> str | None:
        if not self.presign_urls:
            return None
        from .api.ranges import content_disposition

        params = {"Bucket": self.bucket, "Key": self._key(key),
                  "ResponseContentDisposition": content_disposition(filename)}
        return self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=3600)


def _not_found(exc: Exception) -> bool:
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


_LOCK = threading.Lock()


@lru_cache(maxsize=16)
def _s3_store(bucket: str, prefix: str, endpoint_url: str | None, presign: bool, threshold: int) -> S3Store:
    return S3Store(bucket, prefix, endpoint_url, presign, threshold)


def get_store(settings: Settings) -> Store:
    if settings.store == "s3":
        # One client per configuration: making one costs milliseconds, and boto3's default session is not
        # safe to make clients from in several threads at once. A client itself is thread-safe.
        with _LOCK:
            return _s3_store(settings.s3_bucket, settings.s3_prefix, settings.s3_endpoint_url, settings.s3_presign,
                             settings.s3_multipart_threshold)
    return LocalStore(settings.data_dir)


def upload_dir(store: Store, local: Path, prefix: str) -> None:
    """Every file under `local` to prefix + its relative path (an unpacked model directory)."""
    for path in sorted(local.rglob("*")):
        if path.is_file() and not path.is_symlink():
            store.put_file(path, prefix + path.relative_to(local).as_posix())


def materialise(store: Store, data_dir: Path, key: str, *, is_dir: bool = False) -> Path:
    """The local copy of a store key (a file, or a directory prefix) at data_dir/key, fetched if missing.

    Uploads are immutable (their keys carry their id), so a copy of the right size is reused across jobs."""
    if isinstance(store, LocalStore):
        return store.path(key)  # the store is this directory: nothing to fetch
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
    every worker's own disk (registered model roots), and hub or bundled teachers need no store."""
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
