"""The S3-compatible store (AWS S3, MinIO, any endpoint URL): the same keys as the local store, in a bucket.

Large files go up in parts (upload_file with a TransferConfig). A multipart upload is invisible until it is
completed, so an object appears whole or not at all; one left open by a process killed mid-upload holds its
parts (and their storage) until it is aborted, which `distillery gc` does (abort_incomplete_uploads).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from .storage import CHUNK, StoreError

MIN_PART = 5 * 1024**2  # S3's smallest part (every part but the last)


def check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or ".." in parts or "" in parts[:-1]:
        raise StoreError(f"{key!r} is not a relative key inside the store")
    return key


def _client(endpoint_url: str | None):
    import boto3
    from botocore.config import Config

    # path-style addressing: MinIO and moto serve buckets under the path, not as a subdomain
    config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"})
    return boto3.client("s3", endpoint_url=endpoint_url, config=config)


class S3Store:
    """boto3 on any S3-compatible endpoint.

    `public_endpoint_url` is the address clients reach the store at, when it differs from the one the service
    uses (http://minio:9000 inside compose): presigned URLs are signed for it, since the host is part of the
    signature and cannot be rewritten afterwards."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None, presign: bool = False,
                 multipart_threshold: int = 64 * 1024**2, part_size: int = 64 * 1024**2,
                 public_endpoint_url: str | None = None, presign_expiry: int = 3600) -> None:
        from boto3.s3.transfer import TransferConfig

        self.bucket, self.prefix, self.presign_urls, self.presign_expiry = bucket, prefix, presign, presign_expiry
        self.client = _client(endpoint_url)
        self.public_client = _client(public_endpoint_url) if public_endpoint_url else self.client
        self.transfer = TransferConfig(multipart_threshold=multipart_threshold,
                                       multipart_chunksize=max(part_size, MIN_PART))

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def put_file(self, local: Path, key: str) -> None:
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

    def local_path(self, key: str) -> Path | None:
        return None  # a remote store: each machine keeps its own copy under data_dir

    def read_bytes(self, key: str) -> bytes | None:
        """A small object's content (a checkpoint's marker); None: no such object."""
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except Exception as exc:
            if _not_found(exc):
                return None
            raise
        with body:
            return body.read()

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
        return self.public_client.generate_presigned_url("get_object", Params=params, ExpiresIn=self.presign_expiry)

    def incomplete_uploads(self, initiated_before: datetime) -> list[tuple[str, str]]:
        """(key, upload id) of the multipart uploads under this store's prefix started before the given time."""
        found = []
        pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=self.prefix)
        for page in pages:
            for upload in page.get("Uploads", []):
                if upload["Initiated"] < initiated_before:
                    found.append((upload["Key"][len(self.prefix):], upload["UploadId"]))
        return found

    def abort_incomplete_uploads(self, initiated_before: datetime) -> list[str]:
        """Abort those multipart uploads (a process killed mid-upload left them; younger ones may still be
        running and are left alone); returns their keys."""
        stale = self.incomplete_uploads(initiated_before)
        for key, upload_id in stale:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.prefix + key, UploadId=upload_id)
        return [key for key, _ in stale]


def _not_found(exc: Exception) -> bool:
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")
