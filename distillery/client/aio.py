"""The asyncio client: the same resources and calls as `Client`, awaited.

    import asyncio
    from distillery import AsyncClient

    async def main():
        async with AsyncClient("http://127.0.0.1:8000", api_key="dk_...") as client:
            train = await client.datasets.upload("data/train.jsonl")
            job = await client.jobs.create({"teacher": {"source": "bundled"}, "task": "feature-extraction",
                                            "data": {"train": train.id}, "stages": [...]})
            async for event in client.jobs.events(job.id, follow=True):
                print(event.stage, event.step, event.total)
            await client.artifacts.download(job, to="out/")

    asyncio.run(main())

File reads and writes (uploads, downloads) are plain blocking calls, a chunk at a time.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar, overload

import httpx

from .download import ProgressCallback, Target
from .errors import ConnectionFailed, RangeNotSatisfiable, RateLimited, ServiceUnavailable
from .jobs_async import AsyncJobs
from .resources import DEFAULT_PAGE, archive_name, model_body, pack_model_dir
from .sync import resolve_connection
from .transport import AsyncTransport, RetryPolicy
from .types import Artifact, Dataset, Job, Model

T = TypeVar("T")
RETRYABLE = (ConnectionFailed, ServiceUnavailable, RateLimited)


class AsyncClient:
    """A Distillery service. `url` and `api_key` default to $DISTILLERY_URL and $DISTILLERY_API_KEY.

    `timeout` is seconds per request (an httpx.Timeout works too); `retries` is how many more times a call
    that is safe to repeat is tried after 429/502/503/504 answers or connection errors, with exponential
    backoff and jitter (`backoff` seconds at first) honouring Retry-After. `event_hooks` go to httpx
    (async functions here, e.g. ``{"response": [log_response]}``). Use it as a context manager, or call `close()`.

    Resources: `models`, `datasets`, `jobs`, `artifacts`. Errors are `distillery.client.errors`
    exceptions, all subclasses of `DistilleryError`."""

    def __init__(self, url: str | None = None, api_key: str | None = None, *, timeout: float | httpx.Timeout = 30.0,
                 retries: int = 3, backoff: float = 0.5, event_hooks: Mapping[str, list] | None = None) -> None:
        url, api_key = resolve_connection(url, api_key)
        self.url = url
        self.policy = RetryPolicy(retries=retries, backoff=backoff)
        self.transport = AsyncTransport(url, api_key, timeout=timeout, policy=self.policy, event_hooks=event_hooks)
        self.models = AsyncModels(self)
        self.datasets = AsyncDatasets(self)
        self.jobs = AsyncJobs(self)
        self.artifacts = AsyncArtifacts(self)

    async def close(self) -> None:
        await self.transport.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _get(self, path: str, **kwargs: Any) -> Any:
        return (await self.transport.request("GET", path, idempotent=True, **kwargs)).json()

    async def _pages(self, path: str, parse: Callable[[Any], T], params: dict[str, Any] | None = None,
                     limit: int | None = None) -> AsyncIterator[T]:
        """Every item of a cursor-paginated list, fetching the next page as the iteration reaches it."""
        params = {"limit": DEFAULT_PAGE, **(params or {})}
        seen = 0
        while True:
            page = await self._get(path, params=params)
            for item in page["data"]:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield parse(item)
            if not page["has_more"] or not page.get("next_cursor"):
                return
            params = {**params, "after": page["next_cursor"]}


class AsyncModels:
    """Teacher models: `register` a reference, or `upload` an archive or directory."""

    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def register(self, name: str, *, path: str | os.PathLike | None = None, hf: str | None = None,
                 revision: str | None = None, bundled: bool = False) -> Model:
        """Register a model by reference: `path` (a directory on the service's machine under its allowed
        roots), `hf` + `revision` (a hub id at a pinned 40-character commit), or `bundled=True`.

            model = await client.models.register("minilm", hf="sentence-transformers/all-MiniLM-L6-v2",
                                                 revision="c9745ed1d9f207416be6d2e6f8de32d1f16199bf")
            recipe["teacher"] = {"model": model.id}
        """
        body = model_body(name, path=path, hf=hf, revision=revision, bundled=bundled)
        response = await self._c.transport.request("POST", "/v1/models", idempotent=False, json=body)
        return Model.model_validate(response.json())

    async def upload(self, archive: str | os.PathLike, *, name: str | None = None) -> Model:
        """Upload a model: a .tar, .tar.gz, .tgz or .zip of a Hugging Face model directory, or the directory
        itself (packed into a deterministic tar on the way). Sent once, never retried.

            model = await client.models.upload("checkpoints/my-bert")      # or "my-bert.tar.gz"
        """
        path = Path(archive)
        if path.is_dir():
            packed = pack_model_dir(path)
            try:
                return await self._send(packed, f"{path.name}.tar", name or path.name)
            finally:
                packed.unlink(missing_ok=True)
        return await self._send(path, archive_name(path), name)

    async def _send(self, path: Path, filename: str, name: str | None) -> Model:
        with open(path, "rb") as f:
            response = await self._c.transport.request(
                "POST", "/v1/models", idempotent=False, files={"archive": (filename, f, "application/octet-stream")},
                data={"name": name} if name else None)
        return Model.model_validate(response.json())

    async def get(self, model_id: str) -> Model:
        return Model.model_validate(await self._c._get(f"/v1/models/{model_id}"))

    def list(self, *, limit: int | None = None) -> AsyncIterator[Model]:
        """Every model of this key's owner, oldest first (pages fetched as needed)."""
        return self._c._pages("/v1/models", Model.model_validate, limit=limit)


class AsyncDatasets:
    """Datasets: JSONL or CSV files whose every row the service checks on upload."""

    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def upload(self, path: str | os.PathLike, *, name: str | None = None) -> Dataset:
        """Upload a .jsonl or .csv file. A bad row is a ValidationError whose detail names the line.

            ds = await client.datasets.upload("data/train.jsonl")
            print(ds.id, ds.kind, ds.rows)
        """
        path = Path(path)
        with open(path, "rb") as f:
            response = await self._c.transport.request(
                "POST", "/v1/datasets", idempotent=False, files={"file": (path.name, f, "application/octet-stream")},
                data={"name": name} if name else None)
        return Dataset.model_validate(response.json())

    async def get(self, dataset_id: str) -> Dataset:
        return Dataset.model_validate(await self._c._get(f"/v1/datasets/{dataset_id}"))

    def list(self, *, limit: int | None = None) -> AsyncIterator[Dataset]:
        return self._c._pages("/v1/datasets", Dataset.model_validate, limit=limit)


class AsyncArtifacts:
    """What finished jobs produced: `model.tar`, `report.json`, `manifest.json`."""

    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def list(self, job: str | Job) -> list[Artifact]:
        job_id = job.id if isinstance(job, Job) else job
        return [a async for a in self._c._pages(f"/v1/jobs/{job_id}/artifacts", Artifact.model_validate)]

    async def get(self, artifact_id: str) -> Artifact:
        """One artifact by its `art_...` id: name, size, sha256 and download URL."""
        response = await self._c.transport.request("GET", f"/v1/artifacts/{artifact_id}", idempotent=True)
        return Artifact.model_validate(response.json())

    @overload
    async def download(self, item: Artifact, to: str | os.PathLike | None = ..., *, resume: bool = ...,
                 names: list[str] | None = ..., on_progress: ProgressCallback | None = ...) -> Path: ...

    @overload
    async def download(self, item: str | Job, to: str | os.PathLike | None = ..., *, resume: bool = ...,
                 names: list[str] | None = ..., on_progress: ProgressCallback | None = ...) -> Path | list[Path]: ...

    async def download(self, item: Artifact | Job | str, to: str | os.PathLike | None = None, *, resume: bool = True,
                 names: list[str] | None = None, on_progress: ProgressCallback | None = None) -> Path | list[Path]:
        """Download an artifact (an Artifact, or an `art_...` id) to `to` and return its path; or every
        artifact of a job (a Job, or a `job_...` id; `names` picks some) into the directory `to`, returning
        their paths. A directory `to` gets the artifact's own name.

        With resume=True a `<file>.part` left by an interrupted download is continued with Range/If-Range;
        a dropped connection is resumed the same way, up to `retries` times. The sha256 is checked at the
        end: on a mismatch the file is removed and ChecksumMismatch raised. A file already in place with
        the right sha256 is not downloaded again.

            path = await client.artifacts.download(job, to="out/", names=["model.tar"])[0]
        """
        if isinstance(item, Artifact):
            return await self._one(item, to, resume, on_progress)
        if isinstance(item, str) and item.startswith("art_"):
            return await self._one(await self.get(item), to, resume, on_progress)
        folder = Path(to) if to is not None else Path(".")
        folder.mkdir(parents=True, exist_ok=True)
        wanted = [a for a in await self.list(item) if names is None or a.name in names]
        return [await self._one(a, folder, resume, on_progress) for a in wanted]

    async def _one(self, artifact: Artifact, to: str | os.PathLike | None, resume: bool,
             on_progress: ProgressCallback | None) -> Path:
        target = Target.of(artifact, to)
        if target.already_done():
            return target.dest
        offset, attempt = target.start(resume), 0
        while True:
            if target.part_is_whole(offset):
                return target.finish()
            try:
                return await self._fetch(target, offset, on_progress)
            except RangeNotSatisfiable:
                offset = target.start(resume=False)  # the part is not a prefix of this content
            except RETRYABLE as exc:
                if attempt >= self._c.policy.retries:
                    raise
                await asyncio.sleep(self._c.policy.delay(attempt, getattr(exc, "response", None)))
                offset = target.start(resume=True)  # carry on from what reached the disk
            attempt += 1

    async def _fetch(self, target: Target, offset: int, on_progress: ProgressCallback | None) -> Path:
        artifact = target.artifact
        async with self._c.transport.stream("GET", artifact.download_url, headers=target.request_headers(offset),
                                            follow_redirects=True) as response:
            f = target.open_for(response, offset)
            try:
                done = offset if response.status_code == 206 else 0
                async for chunk in response.aiter_bytes():  # as they arrive: a cut keeps what came
                    f.write(chunk)
                    done += len(chunk)
                    if on_progress is not None:
                        on_progress(done, artifact.size_bytes)
            finally:
                f.close()
        return target.finish()
