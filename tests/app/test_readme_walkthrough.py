"""The README's curl walkthrough, run as written: `distillery serve` with no configuration, then the bash block
that compresses the bundled all-MiniLM-L6-v2 with curl and jq, with only URL and KEY filled in from what
`serve` printed. Then Ctrl-C stops serve cleanly.

The one service test that trains the real model (a 3-layer student, one epoch over 2,000 sentences, then
int8), so it is slow: 46 s on two quiet cores (the job 41 s, of which distillation 32 s), 228 s once
with the machine busy with other work (it prints its own breakdown). That is the walkthrough's own cost;
the tiny fixture models elsewhere cannot show that the recipe a reader copies actually runs."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.app.conftest import free_port
from tests.app.test_cli_service import Serve, _children_of
from tests.databases import unavailable

ROOT = Path(__file__).resolve().parents[2]
LEAD = "Compress the bundled all-MiniLM-L6-v2 with curl alone"
FIRST_LINE = re.compile(r"^URL=http://127\.0\.0\.1:8000; KEY=dk_\.\.\.", re.M)


def walkthrough() -> str:
    """The first bash block after the sentence that introduces it, verbatim."""
    text = (ROOT / "README.md").read_text()
    at = text.index(LEAD)
    block = re.search(r"```bash\n(.*?)```", text[at:], re.S)
    assert block is not None, "no bash block after the walkthrough's introduction"
    return block[1]


def with_url_and_key(script: str, url: str, key: str) -> str:
    assert len(FIRST_LINE.findall(script)) == 1, "the walkthrough no longer starts with URL=...; KEY=dk_..."
    return FIRST_LINE.sub(f"URL={url}; KEY={key}", script)


def sse_and_rest(out: str) -> tuple[list[dict], dict, str]:
    """The event stream's frames (as field dicts), its `end` frame, and what the script printed after it."""
    end = re.search(r"^event: end\ndata: (.*)\n\n", out, re.M)
    assert end is not None, f"the event stream did not end with `event: end`:\n{out[-3000:]}"
    frames = []
    for raw in out[:end.start()].split("\n\n"):
        fields = dict(line.split(": ", 1) for line in raw.splitlines() if ": " in line and not line.startswith(":"))
        if fields.get("event") == "progress":
            frames.append(fields)
    return frames, json.loads(end[1]), out[end.end():]


def json_values(text: str) -> list[dict]:
    decoder, values, i = json.JSONDecoder(), [], 0
    while (i := len(text) - len(text[i:].lstrip())) < len(text):
        value, i = decoder.raw_decode(text, i)
        values.append(value)
    return values


@pytest.mark.slow  # the real all-MiniLM-L6-v2 (`-m 'not slow'` leaves it out)
def test_the_readme_walkthrough_compresses_minilm_with_curl_and_ctrl_c_stops_serve(tmp_path):
    missing = [tool for tool in ("curl", "jq", "bash") if shutil.which(tool) is None]
    if missing:
        unavailable(f"the README's walkthrough needs {' and '.join(missing)}, not installed")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DISTILLERY_") and k not in ("DATABASE_URL", "REDIS_URL")}
    work = tmp_path / "reader"  # the reader's directory: the README's relative paths, and where -OJ saves
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")
    serve = Serve(tmp_path / "data", free_port(), env)
    t0 = time.time()
    try:
        url = serve.wait_for(r"Distillery is running at (http://\S+)")[1]
        key = serve.wait_for(r"API key \(shown once; keep it\): (dk_\S+)")[1]
        script = with_url_and_key(walkthrough(), url, key)
        ran = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=work, capture_output=True, text=True,
                             timeout=600)
        took = time.time() - t0
        assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]

        client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        jobs = client.get("/v1/jobs").json()["data"]
        assert len(jobs) == 1, jobs
        job = jobs[0]
        assert job["status"] == "succeeded", (job.get("failure"), "".join(serve.err)[-3000:])
        ran_for = (datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"]))
        stage_s = ", ".join(f"{s['kind']} {s['duration_s']:.0f} s" for s in job["stages"])

        # the stream ended with the job: its last event is the job's final one, then `end` with the status
        frames, end, rest = sse_and_rest(ran.stdout)
        assert end == {"status": "succeeded"}
        events = client.get(f"/v1/jobs/{job['id']}/events", params={"limit": 500}).json()
        last = events["data"][-1]
        assert not events["has_more"] and last["message"].startswith("succeeded")
        assert json.loads(frames[-1]["data"]) == last and frames[-1]["id"] == str(last["seq"])

        # the report as jq printed it: distill and quantize, each with its held_out retention
        stages = json_values(rest)
        assert [s["kind"] for s in stages] == ["distill", "quantize"], rest[-3000:]
        for stage in stages:
            assert stage["status"] == "passed"
            retention = stage["tasks"]["held_out"]["retention"]
            assert 0.8 <= retention <= 1.0, stage  # the walkthrough's gate

        # the download is model.tar, whose sha256 is the artifact's strong ETag
        tar = work / "model.tar"
        assert tar.is_file(), sorted(p.name for p in work.iterdir())
        art = next(a for a in client.get(f"/v1/jobs/{job['id']}/artifacts").json()["data"] if a["name"] == "model.tar")
        etag = client.head(f"/v1/artifacts/{art['id']}/download").headers["etag"]
        assert etag == f'"{hashlib.sha256(tar.read_bytes()).hexdigest()}"' and art["size_bytes"] == tar.stat().st_size
        client.close()
    finally:
        children = _children_of(serve.proc.pid)
        code, stopped_in = serve.ctrl_c(timeout=30)
    assert code == 0, "".join(serve.err)[-3000:]
    assert "Traceback" not in "".join(serve.err) + "".join(serve.out)
    assert len(children) >= 2  # the broker and the worker
    deadline = time.time() + 5
    while [p for p in children if Path(f"/proc/{p}").exists()] and time.time() < deadline:
        time.sleep(0.1)
    assert [p for p in children if Path(f"/proc/{p}").exists()] == []
    print(f"README walkthrough: {took:.0f} s from serve's start to the download (the job {ran_for.total_seconds():.0f}"
          f" s: {stage_s}); Ctrl-C stopped serve in {stopped_in:.1f} s")
