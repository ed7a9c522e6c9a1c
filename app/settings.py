"""Service settings, from environment variables (prefix DISTILLERY_, plus the usual DATABASE_URL and
REDIS_URL). Every setting has a default, so `distillery serve` runs with no configuration at all."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISTILLERY_", extra="ignore")

    data_dir: Path = Field(Path("./distillery-data"), description="uploads, job outputs, the SQLite file")
    database_url: str | None = Field(
        None, validation_alias=AliasChoices("DATABASE_URL", "DISTILLERY_DATABASE_URL"),
        description="SQLAlchemy URL; default SQLite in data_dir (postgresql+psycopg://... in production)")
    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias=AliasChoices("REDIS_URL",
                                                                                      "DISTILLERY_REDIS_URL"))
    model_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="roots under which local model paths may be registered: a JSON list or "
        "paths separated by ':' (as PATH is)")
    max_upload_bytes: int = Field(20 * 1024**3, description="cap on one uploaded model or dataset (413 past it)")
    max_unpacked_bytes: int = Field(20 * 1024**3, ge=1, description="cap on the bytes an uploaded model archive "
                                    "unpacks to, counted while writing (422 past it)")
    max_compression_ratio: float = Field(100, ge=1, description="an archive may unpack to at most this many times "
                                         "its own size, counted while writing (422 past it: a decompression bomb)")
    min_free_disk_bytes: int = Field(1024**3, ge=0, description="free space an upload or unpacking must leave on "
                                     "data_dir's disk, checked against Content-Length first and while writing "
                                     "(507 Insufficient Storage past it)")
    max_dataset_row_bytes: int = Field(1024**2, ge=1, description="cap on one dataset row (a JSONL line or a CSV "
                                       "record), read with a bounded readline (422 past it)")
    cors_origins: list[str] = Field(default_factory=list, description="origins allowed to call the API")
    metrics_token: SecretStr | None = Field(None, description="bearer token a scraper must send to /metrics "
                                            "(401 without it); unset: /metrics answers clients on this host only "
                                            "(403 to others)")
    lease_seconds: int = Field(60, ge=5, description="a worker's claim on a job lapses this long after its "
                                                     "last heartbeat")
    max_attempts: int = Field(3, ge=1, description="deliveries of one job before it is failed")
    job_soft_time_limit: int = Field(6 * 3600, description="seconds before a job is asked to stop (timeout)")
    job_time_limit: int = Field(6 * 3600 + 300, description="seconds before a job's worker is killed")
    # What a worker may use, for the submit-time memory estimate: a recipe estimated above it is refused (422).
    worker_memory_gb: float | None = Field(None, gt=0, description="memory of a CPU worker; unset: this host's "
                                                                   "physical memory (the embedded default)")
    gpu_memory_gb: float | None = Field(None, gt=0, description="memory of one GPU of the gpu queue's workers; "
                                                                "unset: not checked")
    gpu_workers: bool = Field(True, description="whether a worker serves the gpu queue; `distillery serve` sets "
                              "it false on a host without CUDA, and a `device: cuda` recipe is then refused at "
                              "submit (422)")
    reconcile_seconds: int = Field(30, ge=1, description="how often queued jobs without a live lease are "
                                                         "re-enqueued")
    hub_timeout_seconds: float = Field(10, gt=0, le=120, description="at submit, the dry run gives up on the "
                                       "Hugging Face hub after this long (one request for config.json, no "
                                       "retries); an unreachable hub answers 503 naming teacher.id")
    max_concurrent_slow_per_key: int = Field(4, ge=1, description="slow requests (job submissions, uploads, model "
                                             "registrations) one owner may have in progress on one API process; "
                                             "past it, 429 with Retry-After")
    store: str = Field("local", description="where uploads and job outputs live: data_dir "
                                          "(local), or an S3-compatible bucket shared by every machine (s3); any "
                                          "backend registered with app.store.register_store_backend")
    s3_bucket: str = Field("distillery", description="the bucket (store s3)")
    s3_prefix: str = Field("", description="a key prefix inside the bucket, e.g. prod/")
    s3_endpoint_url: str | None = Field(None, description="a MinIO or other S3-compatible endpoint; unset for "
                                                          "AWS. Credentials: the standard AWS_* variables")
    s3_presign: bool = Field(False, description="answer artifact downloads with a 307 to a presigned URL")
    s3_multipart_threshold: int = Field(64 * 1024**2, ge=1,
                                        description="files from this size up are uploaded in parts")
    s3_part_size: int = Field(64 * 1024**2, ge=5 * 1024**2,
                              description="the size of each part of a multipart upload (S3's minimum: 5 MiB)")
    s3_public_endpoint_url: str | None = Field(None, description="the store's address as clients reach it, for "
                                               "presigned URLs (the signature covers the host); unset: "
                                               "s3_endpoint_url")
    s3_presign_expiry_seconds: int = Field(3600, ge=1, le=7 * 24 * 3600,
                                           description="how long a presigned download URL stays valid")
    worker_cache_max_gb: float = Field(50, ge=0, description="store s3: a worker's cache of uploads (teachers, "
                                       "datasets) under data_dir is cut back to this, least recently used "
                                       "first, before each job; 0: no limit")
    retention_days: float = Field(30, gt=0, description="`distillery gc` removes uploads and job outputs older "
                                                       "than this that no live job needs")

    @field_validator("store")
    @classmethod
    def _known_store(cls, value: str) -> str:
        from .store import store_backend_names  # here: the store module imports these settings

        if value not in store_backend_names():
            raise ValueError(f"unknown store backend {value!r}; known: {', '.join(store_backend_names())}")
        return value

    @field_validator("model_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip()
            return json.loads(value) if value.startswith("[") else [p for p in value.split(os.pathsep) if p]
        return value

    @model_validator(mode="after")
    def _soft_limit_first(self) -> Settings:
        # The soft limit lets a job stop cleanly (timeout, finished stages kept); past the hard limit the
        # worker process is killed first and that never happens. (Equal limits test the hard path alone.)
        if self.job_soft_time_limit > self.job_time_limit:
            raise ValueError(f"DISTILLERY_JOB_SOFT_TIME_LIMIT ({self.job_soft_time_limit}) must not exceed "
                             f"DISTILLERY_JOB_TIME_LIMIT ({self.job_time_limit})")
        return self

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            url = self.database_url
            # plain postgresql:// means the psycopg 3 driver here (the one installed)
            if url.startswith("postgresql://") or url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url.split("://", 1)[1]
            return url
        return f"sqlite:///{(self.data_dir / 'distillery.db').resolve()}"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def remote_store(self) -> bool:
        return self.store != "local"

    def memory_budget(self, queue: str) -> int | None:
        """Bytes a job on this queue may use, or None when unknown."""
        if queue == "gpu":
            return int(self.gpu_memory_gb * 1024**3) if self.gpu_memory_gb else None
        if self.worker_memory_gb:
            return int(self.worker_memory_gb * 1024**3)
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):  # not on every platform
            return None


@lru_cache
def get_settings() -> Settings:
    return Settings()
