"""AsyncClient against the real service: a representative subset (reads, lists, the event stream, an
idempotent replay, uploads, downloads that resume, typed errors)."""

from __future__ import annotations

import asyncio
import hashlib

import httpx
import pytest

from distillery import AsyncClient
from distillery.client import NotFound, ValidationError


def test_async_client(stack, done_job, tmp_path):
    ranges: list[tuple[str | None, int]] = []

    async def on_response(response: httpx.Response) -> None:
        if "/download" in response.request.url.path:
            ranges.append((response.request.headers.get("range"), response.status_code))

    async def main() -> None:
        async with AsyncClient(stack.url, stack.key, event_hooks={"response": [on_response]}) as c:
            job = await c.jobs.get(done_job.job_id)
            assert job.status == "succeeded"
            replay = await c.jobs.create(done_job.body, idempotency_key=done_job.key)
            assert replay.id == job.id
            assert done_job.job_id in [j.id async for j in c.jobs.list(status="succeeded", page_size=1)]
            paged = [e.seq async for e in c.jobs.events(job.id)]
            assert [e.seq async for e in c.jobs.events(job.id, follow=True)] == paged and paged
            assert (await c.jobs.wait(job.id, timeout=10)).status == "succeeded"
            assert (await c.jobs.report(job.id))["status"] == "succeeded"
            assert (await c.models.get(done_job.model_id)).id == done_job.model_id
            ds = await c.datasets.upload(stack.data["eval_text"], name="async")
            assert ds.name == "async" and ds.rows == 48
            assert ds.id in [d.id async for d in c.datasets.list()]

            tar = next(a for a in await c.artifacts.list(job.id) if a.name == "model.tar")
            (tmp_path / "model.tar.part").write_bytes(b"")
            whole = await c.artifacts.download(tar, tmp_path)
            content = whole.read_bytes()
            whole.unlink()
            (tmp_path / "model.tar.part").write_bytes(content[:1000])
            again = await c.artifacts.download(tar, tmp_path)
            assert hashlib.sha256(again.read_bytes()).hexdigest() == tar.sha256
            assert ranges == [(None, 200), ("bytes=1000-", 206)]
            assert len(await c.artifacts.download(job.id, tmp_path / "all")) == 3

            with pytest.raises(ValidationError) as err:
                await c.jobs.create({**done_job.body, "stages": [{"kind": "prune", "method": "magnitude",
                                                                   "sparsity": 1.5}]})
            assert err.value.errors and err.value.errors[0]["field"].startswith("stages.0")
        async with AsyncClient(stack.url, stack.other_key) as other:
            with pytest.raises(NotFound):
                await other.jobs.get(done_job.job_id)
            with pytest.raises(NotFound):
                await other.artifacts.download(tar, tmp_path / "theirs")

    asyncio.run(main())
