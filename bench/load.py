"""Load while jobs run: many concurrent clients poll and list jobs and read events while real jobs go
through the real worker. Reports the error count (goal 0), latency percentiles per kind of request, the
same requests' latency on an idle service (the baseline, measured first in the same run), and checks that
every job's event sequence is complete and in order.

    python bench/load.py [--clients 200] [--seconds 60] [--jobs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.api_support import Service, new_key, pg_database, register_tiny_inputs  # noqa: E402


def setup_jobs(service: Service, n: int) -> list[str]:
    model_id, ds = register_tiny_inputs(service)
    with httpx.Client(base_url=service.url, headers=service.headers, timeout=60) as c:
        body = {"teacher": {"model": model_id}, "task": "feature-extraction",
                "data": {"train": ds, "eval": {"text": ds}},
                "stages": [{"kind": "distill", "student": {"num_layers": 2}, "epochs": 2},
                           {"kind": "quantize", "method": "int8-dynamic"}],
                "evaluate": {"latency_runs": 3, "warmup_runs": 1, "throughput_batch": 4}}
        return [c.post("/v1/jobs", json=body).raise_for_status().json()["id"] for _ in range(n)]


async def hammer(service: Service, job_ids: list[str], clients: int, seconds: float) -> dict:
    """Each client loops over: poll a job, list jobs, read a page of a job's events."""
    samples: dict[str, list[float]] = {"poll": [], "list": [], "events": []}
    errors: list[str] = []
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=service.url, headers=service.headers, limits=limits,
                                 timeout=60) as client:

        async def one(seed: int) -> None:
            rng = random.Random(seed)
            while time.perf_counter() < deadline:
                kind = rng.choice(("poll", "poll", "list", "events"))
                job = rng.choice(job_ids)
                url = {"poll": f"/v1/jobs/{job}", "list": "/v1/jobs?limit=20",
                       "events": f"/v1/jobs/{job}/events?limit=50"}[kind]
                t0 = time.perf_counter()
                try:
                    r = await client.get(url)
                    if r.status_code != 200:
                        errors.append(f"{kind} {r.status_code}")
                except httpx.HTTPError as exc:
                    errors.append(f"{kind} {type(exc).__name__}")
                samples[kind].append(time.perf_counter() - t0)

        await asyncio.gather(*(one(i) for i in range(clients)))

    def pct(values: list[float], q: float) -> float:
        values = sorted(values)
        return 1000 * values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")

    return {"requests": sum(len(v) for v in samples.values()), "errors": len(errors), "error_kinds": errors[:20],
            "rps": sum(len(v) for v in samples.values()) / seconds,
            **{f"{k}_p50_ms": pct(v, 0.5) for k, v in samples.items()},
            **{f"{k}_p99_ms": pct(v, 0.99) for k, v in samples.items()}}


def check_events(service: Service, job_ids: list[str]) -> dict:
    """Every job finished once, and its events are 1..n with no gap or repeat, across pages."""
    bad: list[str] = []
    statuses: dict[str, int] = {}
    with httpx.Client(base_url=service.url, headers=service.headers, timeout=60) as c:
        for job_id in job_ids:
            job = c.get(f"/v1/jobs/{job_id}").json()
            statuses[job["status"]] = statuses.get(job["status"], 0) + 1
            seqs, after = [], 0
            while True:
                page = c.get(f"/v1/jobs/{job_id}/events", params={"after": after, "limit": 100}).json()
                seqs += [e["seq"] for e in page["data"]]
                if not page["has_more"]:
                    break
                after = page["next_cursor"]
            if seqs != list(range(1, len(seqs) + 1)) or job["attempts"] != 1:
                bad.append(job_id)
    return {"statuses": statuses, "jobs_with_bad_events": bad}


def wait_done(service: Service, job_ids: list[str], timeout: float) -> None:
    deadline = time.time() + timeout
    with httpx.Client(base_url=service.url, headers=service.headers, timeout=60) as c:
        while time.time() < deadline:
            states = [c.get(f"/v1/jobs/{j}").json()["status"] for j in job_ids]
            if all(s in ("succeeded", "failed", "cancelled") for s in states):
                return
            time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--database", choices=["postgres", "sqlite"], default="postgres")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, pg_database(args.database, Path(tmp)) as url, \
            Service(Path(tmp), url) as service:
        service.owner, service.headers = new_key(service.settings)
        job_ids = setup_jobs(service, args.jobs)
        loaded = asyncio.run(hammer(service, job_ids, args.clients, args.seconds))
        wait_done(service, job_ids, timeout=900)
        idle = asyncio.run(hammer(service, job_ids, args.clients, min(10.0, args.seconds)))  # jobs finished
        events = check_events(service, job_ids)
    print(f"{args.clients} clients for {args.seconds:.0f} s while {args.jobs} jobs ran (one worker); "
          f"database {args.database}")
    print("| request | p50 ms (jobs running) | p99 ms (jobs running) | p99 ms (idle, baseline) |")
    print("|---|---:|---:|---:|")
    for kind in ("poll", "list", "events"):
        print(f"| {kind} | {loaded[f'{kind}_p50_ms']:.0f} | {loaded[f'{kind}_p99_ms']:.0f} | "
              f"{idle[f'{kind}_p99_ms']:.0f} |")
    print(f"requests {loaded['requests']} ({loaded['rps']:.0f}/s), errors {loaded['errors']} (goal 0) "
          f"{loaded['error_kinds'][:5]}; idle errors {idle['errors']}")
    print(f"jobs: {events['statuses']}; jobs whose events are not exactly 1..n or ran more than once: "
          f"{events['jobs_with_bad_events'] or 'none'}")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "load.json").write_text(json.dumps({"loaded": loaded, "idle": idle, "events": events}, indent=2))


if __name__ == "__main__":
    main()
