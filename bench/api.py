"""API benchmarks, each against a baseline measured in the same run.

1. Submit to start: POST /v1/jobs until the worker has claimed the job (started_at), on an idle worker,
   against the broker's own round trip (a Redis LPUSH/BRPOP) measured the same way. Goal: under 1 s.
2. Status polling: GET /v1/jobs/{id} of the first of those jobs (submitted through the API, run by the
   worker to success; real key, real database) under concurrent load, against a bare FastAPI endpoint
   returning the same JSON. Both are served by uvicorn as `distillery api` serves (info logging with the
   access log, proxy headers, keep-alive), their output in log files, and the access logs are checked.
   Goal: the real endpoint at least half the bare one's throughput.
3. Download memory: the API's RSS while it streams a 1 GB artifact, against its RSS before. Goal: flat,
   under 50 MB growth.

    python bench/api.py [--seconds 10] [--clients 32] [--database postgres|sqlite] [--quick]

--quick runs every check briefly (1 s rounds, one round, 2 submissions, a 64 MB download): a smoke test of
the benchmark itself in well under a minute, not figures to quote.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.api_support import (  # noqa: E402
    Service,
    bare_app_server,
    insert_artifact,
    new_key,
    pg_database,
    register_tiny_inputs,
    rss_bytes,
)


async def _load(url: str, headers: dict, seconds: float, clients: int) -> dict:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as client:

        async def one() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    r = await client.get(url)
                    if r.status_code != 200:
                        errors += 1
                except httpx.HTTPError:
                    errors += 1
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(clients)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    return {"requests": len(latencies), "errors": errors, "rps": len(latencies) / elapsed,
            "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]}


def _access_lines(log: Path, path: str) -> int:
    """Requests answered 200 on `path`, as uvicorn's access log records them."""
    return len(re.findall(rf'"GET {re.escape(path)} HTTP/1\.1" 200', log.read_text(errors="replace")))


def polling(service: Service, job_id: str, seconds: float, clients: int, rounds: int, warm: float,
            folder: Path) -> dict:
    """Alternate bare and real rounds, so load on the shared machine hits both alike; medians reported."""
    with httpx.Client(base_url=service.url, headers=service.headers) as c:
        body = c.get(f"/v1/jobs/{job_id}").json()
    if body.get("status") != "succeeded":
        raise SystemExit(f"error: the polled job {job_id} is {body.get('status')}, not succeeded: {body}")
    real_path = f"/v1/jobs/{job_id}"
    results: dict[str, list[dict]] = {"bare": [], "real": []}
    with bare_app_server(body, folder) as (bare_url, bare_log):
        warmup = [asyncio.run(_load(f"{bare_url}/bare", {}, warm, clients)),  # warm both the same way
                  asyncio.run(_load(service.url + real_path, service.headers, warm, clients))]
        for _ in range(rounds):
            results["bare"].append(asyncio.run(_load(f"{bare_url}/bare", {}, seconds, clients)))
            results["real"].append(asyncio.run(_load(service.url + real_path, service.headers, seconds, clients)))
        # Served alike: both logged every request they answered (the access log is part of the cost).
        logged = {"bare": _access_lines(bare_log, "/bare"), "real": _access_lines(service.log, real_path)}
    for kind, first in (("bare", warmup[0]), ("real", warmup[1])):
        answered = sum(r["requests"] - r["errors"] for r in [first, *results[kind]])
        if logged[kind] < answered:
            raise SystemExit(f"error: the {kind} endpoint's access log has {logged[kind]} requests, not the "
                             f"{answered} it answered: the two are not served the same way")

    def median(kind: str) -> dict:
        runs = results[kind]
        return {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_ms", "p99_ms")} | {
            "errors": sum(r["errors"] for r in runs), "requests": sum(r["requests"] for r in runs)}

    real, bare = median("real"), median("bare")
    return {"real": real, "bare": bare, "ratio": real["rps"] / bare["rps"], "access_log_lines": logged,
            "rounds": results}


def submit_to_start(service: Service, runs: int) -> dict:
    import redis

    model_id, ds = register_tiny_inputs(service)
    delays: list[float] = []
    answered: list[float] = []
    job_ids: list[str] = []
    with httpx.Client(base_url=service.url, headers=service.headers, timeout=60) as c:
        body = {"teacher": {"model": model_id}, "task": "feature-extraction",
                "data": {"train": ds, "eval": {"text": ds}},
                "stages": [{"kind": "distill", "student": {"num_layers": 1}, "max_steps": 1}],
                "evaluate": {"latency_runs": 1, "warmup_runs": 0, "throughput_batch": 2}}
        for _ in range(runs):
            # from the moment the client sends POST (dry run included) to the worker's claim of the job
            sent = time.time()
            job = c.post("/v1/jobs", json=body).json()
            answered.append(time.time() - sent)
            while (got := c.get(f"/v1/jobs/{job['id']}").json())["status"] not in ("succeeded", "failed"):
                time.sleep(0.05)
            if got["status"] != "succeeded":
                raise SystemExit(f"error: job {job['id']} failed: {got.get('failure')}")
            job_ids.append(job["id"])
            started = datetime.fromisoformat(got["started_at"].replace("Z", "+00:00")).timestamp()
            delays.append(started - sent)
    client = redis.Redis.from_url(service.settings.redis_url)
    broker = []
    for _ in range(runs):
        t0 = time.perf_counter()
        client.lpush("bench-rtt", b"x")
        client.brpop(["bench-rtt"], timeout=5)
        broker.append(time.perf_counter() - t0)
    return {"job_ids": job_ids, "submit_to_start_s": delays, "median_s": statistics.median(delays),
            "post_response_s": statistics.median(answered),
            "broker_round_trip_ms": 1000 * statistics.median(broker)}


def download_memory(service: Service, size: int) -> dict:
    art_id, path = insert_artifact(service.settings, service.owner, size)
    before = rss_bytes(service.pid)
    peak = before
    received = 0
    t0 = time.perf_counter()
    with httpx.Client(base_url=service.url, headers=service.headers, timeout=120) as c, \
            c.stream("GET", f"/v1/artifacts/{art_id}/download") as r:
        r.raise_for_status()
        for chunk in r.iter_bytes(1 << 20):
            received += len(chunk)
            peak = max(peak, rss_bytes(service.pid))
    elapsed = time.perf_counter() - t0
    path.unlink()
    return {"bytes": received, "rss_before_mb": before / 1e6, "rss_peak_mb": peak / 1e6,
            "growth_mb": (peak - before) / 1e6, "throughput_mb_s": received / 1e6 / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--database", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--download-mb", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=5, help="jobs submitted for the submit-to-start check")
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare and real polling rounds")
    parser.add_argument("--quick", action="store_true", help="every check, briefly (see above)")
    args = parser.parse_args()
    warm = 2.0
    if args.quick:
        args.seconds, args.rounds, args.runs, args.download_mb, warm = 1, 1, 2, 64, 0.5
    with tempfile.TemporaryDirectory() as tmp, pg_database(args.database, Path(tmp)) as url, \
            Service(Path(tmp), url) as service:
        service.owner, service.headers = new_key(service.settings)
        start = submit_to_start(service, args.runs)  # first, on an idle worker
        poll = polling(service, start["job_ids"][0], args.seconds, args.clients, args.rounds, warm, Path(tmp))
        down = download_memory(service, args.download_mb * 1024 * 1024)
    rows = [
        ("GET /v1/jobs/{id}: requests/s", f"{poll['real']['rps']:.0f}", f"{poll['bare']['rps']:.0f}",
         f"{poll['ratio']:.2f}", ">= 0.5"),
        ("GET /v1/jobs/{id}: p99 (ms)", f"{poll['real']['p99_ms']:.1f}", f"{poll['bare']['p99_ms']:.1f}", "", ""),
        ("GET /v1/jobs/{id}: errors", str(poll["real"]["errors"]), str(poll["bare"]["errors"]), "", "0"),
        ("POST /v1/jobs to the worker's claim (s, median)", f"{start['median_s']:.3f}",
         f"{start['broker_round_trip_ms'] / 1000:.4f} broker RTT", "", "< 1 s"),
        ("  of which the POST itself (dry run included)", f"{start['post_response_s']:.3f}", "", "", ""),
        (f"download {args.download_mb} MB: API RSS growth (MB)", f"{down['growth_mb']:.1f}",
         f"{down['rss_before_mb']:.0f} before", "", "< 50 MB"),
        ("download throughput (MB/s)", f"{down['throughput_mb_s']:.0f}", "", "", ""),
    ]
    print(f"{args.clients} concurrent clients, {args.rounds} x {args.seconds:.0f} s rounds; database "
          f"{args.database}; {os.cpu_count()} CPUs; load generator in the same machine"
          + ("; --quick: not figures to quote" if args.quick else ""))
    print(f"both served as `distillery api` is, access logs included ({poll['access_log_lines']['real']} real "
          f"and {poll['access_log_lines']['bare']} bare requests logged)")
    print("| check | real | baseline | ratio | goal |\n|---|---:|---:|---:|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    name = "api-quick.json" if args.quick else "api.json"  # a smoke run leaves the real figures alone
    (out / name).write_text(json.dumps({"polling": poll, "submit": start, "download": down}, indent=2))


if __name__ == "__main__":
    main()
