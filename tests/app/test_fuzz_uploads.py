"""Fuzzing the upload endpoints through real HTTP against the real API (tests/engine/test_fuzz_parsers.py sends
the volume to the parsers directly). Generated archives, JSONL and CSV files go up in generated multipart bodies
(odd boundaries, headers, framing) to POST /v1/models and POST /v1/datasets. Properties:

- the answer is a success (201) or a 4xx application/problem+json whose status is the response's; never a 5xx;
- nothing is written outside the upload's own folder (uploads/models/<id>/ or uploads/datasets/<id>/), nothing
  is left in the staging area, and no link appears;
- the API process's memory (VmRSS) stays bounded over the whole run.

A short budget runs in CI (about 30 s). A long run on demand:

    DISTILLERY_FUZZ_EXAMPLES=2000 .venv/bin/python -m pytest tests/app/test_fuzz_uploads.py -p no:cacheprovider -q
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from tests.app.assets_helpers import PROBLEM
from tests.recipe_strategies import fuzz_settings
from tests.upload_strategies import archives, build_archive, csv_files, jsonl_files, multipart_bodies

# The service under test runs in this process (uvicorn in a thread), so this process's RSS is the API's.
MAX_RSS_GROWTH = 256 * 1024**2


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def check_answer(r: httpx.Response) -> None:
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert r.headers["content-type"].startswith(PROBLEM), r.text
        assert r.json()["status"] == r.status_code
    else:
        assert r.status_code == 201, r.text


def check_disk(data_dir: Path) -> None:
    """Every file lies in a finished upload's own folder (or is the SQLite database); staging is empty."""
    uploads = data_dir / "uploads"
    for path in data_dir.rglob("*"):
        assert not path.is_symlink(), path
        if path.is_dir():
            continue
        rel = path.relative_to(data_dir).parts
        if rel[0].startswith("distillery.db"):
            continue
        assert rel[:2] in (("uploads", "models"), ("uploads", "datasets")) and len(rel) >= 4, path
    staging = uploads / ".staging"
    assert not staging.exists() or not any(staging.iterdir()), list(staging.iterdir())


def send_upload(client: httpx.Client, data: st.DataObject) -> httpx.Response:
    """One upload request, its file and (half the time) its multipart framing generated."""
    what = data.draw(st.sampled_from(["archive", "jsonl", "csv"]))
    if what == "archive":
        name, payload = data.draw(archives())
        url, field = "/v1/models", "archive"
    else:
        payload = data.draw(jsonl_files() if what == "jsonl" else csv_files())
        name, url, field = f"upload.{what}", "/v1/datasets", "file"
    framing = data.draw(st.sampled_from(["httpx", "generated"]))
    event(f"{what}, {framing} framing")
    if framing == "httpx":  # a well-formed body: the file's content is what is tested
        return client.post(url, files={field: (name, payload, "application/octet-stream")})
    body, headers = data.draw(multipart_bodies(field, payload, name))
    return client.post(url, content=body, headers=headers)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_uploads_answer_4xx_or_success_and_stay_in_their_folder(client, settings):
    warm = client.post("/v1/models", files={"archive": ("m.tar", build_archive("tar", [], True))})
    assert warm.status_code == 201, warm.text  # the first upload imports the engine: not counted as growth
    base = rss()

    @given(data=st.data())
    @fuzz_settings(default=60)
    def send(data: st.DataObject) -> None:
        r = send_upload(client, data)
        event(f"answered {r.status_code}")
        check_answer(r)
        check_disk(settings.data_dir)

    send()
    grown = rss() - base
    assert grown < MAX_RSS_GROWTH, f"the API's RSS grew by {grown} bytes"
    assert os.listdir(settings.data_dir / "uploads" / ".staging") == []
