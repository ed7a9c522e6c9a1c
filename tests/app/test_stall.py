"""One tenant cannot stall the API for everyone (issue 11, class 2), tried against `distillery api` itself, over
real HTTP, with the Hugging Face hub a black hole: a loopback server that accepts connections and never answers.

One tenant keeps 45 submissions naming an uncached hub teacher in flight. Meanwhile /healthz and /readyz
answer at once, another tenant lists its jobs and submits its own hub job promptly (its own limit, its own
prompt 503), the storming tenant's excess submissions are refused with 429 and Retry-After, and each of its
admitted ones ends within the hub bound with a 503 problem naming `teacher.id`, never a 500.

The service runs in its own process: huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE when it is imported,
and this test process runs offline (tests/conftest.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.app.assets_helpers import assert_problem

from .conftest import REDIS_URL, free_port, make_key

ROOT = Path(__file__).resolve().parents[2]
HUB_TIMEOUT = 2.0  # DISTILLERY_HUB_TIMEOUT_SECONDS for the service under test
SLACK = 4.0  # on top of it: queueing for a thread and CPU on a 2-core machine
STORM = 45  # concurrent submitters of the storming tenant, as in the probe that found the stall
STORM_SECONDS = 6.0
PAIRS = b"text_a,text_b,score\nthe chef cooks,a cook bakes,0.8\nthe goal,the server,0.1\na cat,a dog,0.5\n"
REVISION = "0123456789abcdef0123456789abcdef01234567"


@contextmanager
def black_hole() -> Iterator[str]:
    """An HTTP endpoint that accepts every connection and never sends a byte."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(512)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # the listener was closed: done
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(5)
        for conn in held:
            conn.close()


@contextmanager
def api_process(settings, tmp_path: Path, hub: str) -> Iterator[str]:
    """`distillery api` online, with the black hole as its hub and nothing of the model in its cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISTILLERY_", "HF_", "TRANSFORMERS_"))
           and k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"DATABASE_URL": settings.database_url, "REDIS_URL": REDIS_URL,
                "DISTILLERY_DATA_DIR": str(settings.data_dir), "DISTILLERY_HUB_TIMEOUT_SECONDS": str(HUB_TIMEOUT),
                "HF_ENDPOINT": hub, "HF_HOME": str(tmp_path / "hf-home")})
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "api.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "api", "--port", str(port)], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 90
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, f"the API exited:\n{log.read_text()[-3000:]}"
            assert time.time() < deadline, f"the API did not become ready:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:  # requests still stuck: the old behaviour
            proc.kill()
            proc.wait(10)
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def hub_job(dataset: str) -> dict:
    return {"teacher": {"source": "hf", "id": "org/name", "revision": REVISION}, "task": "feature-extraction",
            "data": {"eval": {"sts": dataset}}, "stages": [{"kind": "quantize", "method": "int8-dynamic"}]}


def timed(call) -> tuple[float, httpx.Response | None]:
    """(seconds, the response), or (seconds, None) when none came within the client's timeout."""
    start = time.monotonic()
    try:
        response = call()
    except httpx.TimeoutException:
        response = None
    return time.monotonic() - start, response


def assert_hub_unavailable(response: httpx.Response) -> None:
    problem = assert_problem(response, 503)
    assert problem["type"] == "urn:distillery:problem:hub_unavailable", problem
    assert [e["field"] for e in problem["errors"]] == ["teacher.id"], problem
    assert int(response.headers["retry-after"]) > 0


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # the production pool, 20 + 40
def test_a_tenant_storming_an_unreachable_hub_stalls_no_one(settings, tmp_path):
    bound = HUB_TIMEOUT + SLACK
    with black_hole() as hub, api_process(settings, tmp_path, hub) as base:
        auth = {name: {"Authorization": f"Bearer {make_key(settings, name)}"} for name in ("storm", "calm")}
        with httpx.Client(base_url=base, timeout=30) as client:
            datasets = {}
            for name, headers in auth.items():
                r = client.post("/v1/datasets", headers=headers, files={"file": ("pairs.csv", PAIRS, "text/csv")})
                assert r.status_code == 201, r.text
                datasets[name] = r.json()["id"]
            # one first, alone: the service imports torch and transformers on its first dry run
            assert_hub_unavailable(client.post("/v1/jobs", json=hub_job(datasets["storm"]), headers=auth["storm"]))

        results: list[tuple[float, httpx.Response | None]] = []
        stop_at = time.monotonic() + STORM_SECONDS

        def storm() -> None:
            with httpx.Client(base_url=base, timeout=bound + 10, headers=auth["storm"]) as c:
                while time.monotonic() < stop_at:
                    results.append(timed(lambda: c.post("/v1/jobs", json=hub_job(datasets["storm"]))))
                    time.sleep(0.05)

        probes: dict[str, list[tuple[float, httpx.Response | None]]] = {"healthz": [], "readyz": [], "list": []}
        with ThreadPoolExecutor(STORM) as pool:
            futures = [pool.submit(storm) for _ in range(STORM)]
            time.sleep(1.0)  # the storm is under way: every slot it may have is taken
            with httpx.Client(base_url=base, timeout=10) as probe:
                for _ in range(4):
                    probes["healthz"].append(timed(lambda: probe.get("/healthz")))
                    probes["readyz"].append(timed(lambda: probe.get("/readyz")))
                    probes["list"].append(timed(lambda: probe.get("/v1/jobs", headers=auth["calm"])))
                    time.sleep(0.2)
                calm_submit = timed(lambda: probe.post("/v1/jobs", json=hub_job(datasets["calm"]),
                                                       headers=auth["calm"]))
            for future in futures:
                future.result()

    for name, limit in (("healthz", 1.5), ("readyz", 3.0), ("list", 3.0)):
        slow = [(round(s, 2), r and r.status_code) for s, r in probes[name] if r is None or s > limit]
        assert slow == [], f"{name} waited behind the storm: {slow}"
        assert all(r is not None and r.status_code == 200 for _, r in probes[name]), name
    # the other tenant's own hub job: its own limit (not the storm's 429), answered within the bound
    seconds, response = calm_submit
    assert response is not None and seconds < bound, seconds
    assert_hub_unavailable(response)

    unanswered = [round(s, 2) for s, r in results if r is None]
    assert unanswered == [], f"{len(unanswered)} submissions had no answer within {bound + 10} s"
    statuses = sorted({r.status_code for _, r in results})
    assert statuses == [429, 503], statuses
    for seconds, response in results:
        assert seconds < bound, f"a submission took {seconds:.1f} s"
        if response.status_code == 429:
            problem = assert_problem(response, 429)
            assert problem["type"] == "urn:distillery:problem:too_many_requests"
            assert int(response.headers["retry-after"]) > 0
        else:
            assert_hub_unavailable(response)
    admitted = sum(r.status_code == 503 for _, r in results)
    # at most 4 at once (the default limit), each held about HUB_TIMEOUT: far fewer than were sent
    assert admitted <= 4 * (STORM_SECONDS / HUB_TIMEOUT + 2), admitted
