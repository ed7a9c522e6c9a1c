"""Scale-out benchmark: N CPU-light jobs through one worker against the same N through two workers, in the
same run, on one database and one broker (the production shape: `distillery api` and separate
`distillery worker` commands sharing PostgreSQL, Redis and the data directory: the default local store;
tests/worker/test_cluster.py runs workers with separate directories on the S3 store).

Configurations, each with a fresh API, fresh workers and one warm-up job per worker (a worker's first job
pays lazy imports), then N measured jobs:

1. one worker, OMP_NUM_THREADS=1: the baseline; the ratio is its wall time over the others';
2. two workers, OMP_NUM_THREADS=1 each, so that they do not fight over two cores;
3. one worker, OMP_NUM_THREADS=2: what one worker gets from the whole machine (a second baseline).

A job is a short distillation of a tiny BERT plus int8 quantization, with the evaluation cut down. The jobs
are inserted into the database and then all enqueued at once (the API's dry run would otherwise compete
for the cores during the measurement); wall time runs from the first enqueue to the last finished_at.
Goal: close to 2x with two workers on two cores. To explain the gap it also measures, per configuration,
the mean time a job holds its worker (claim to finish), how much of that the engine ran, how busy the
workers were, and the CPU the workers and the whole machine used.

    python bench/scale.py [--jobs 8] [--database postgres|sqlite]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.api_support import Service, pg_database  # noqa: E402

CONFIGS = [  # (label, workers, threads per worker)
    ("1 worker, 1 thread", 1, 1),
    ("2 workers, 1 thread each", 2, 1),
    ("1 worker, 2 threads", 1, 2),
]
STAGES = [{"kind": "distill", "student": {"num_layers": 2}, "epochs": 1, "batch_size": 16},
          {"kind": "quantize", "method": "int8-dynamic"}]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def job_recipe(service: Service) -> dict:
    data = service.settings.uploads_dir / "data"
    return {"teacher": {"source": "local", "path": str(service.settings.model_roots[0] / "tiny-bert")},
            "task": "feature-extraction",
            "data": {"train": str(data / "train.jsonl"), "eval": {"text": str(data / "eval_text.jsonl")}},
            "stages": STAGES, "evaluate": {"latency_runs": 2, "warmup_runs": 1, "throughput_batch": 4},
            "max_length": 32}


def insert_jobs(service: Service, n: int) -> list[str]:
    from app.db.base import new_id, session_scope, utcnow
    from app.db.models import Job, StageRun

    ids = [new_id("job") for _ in range(n)]
    with session_scope(service.settings.sqlalchemy_url) as session:
        for job_id in ids:
            session.add(Job(id=job_id, owner="bench", queue="cpu", request={"bench": "scale"},
                            recipe=job_recipe(service), status="queued", cancel_requested=False, attempts=0,
                            created_at=utcnow()))
            for i, stage in enumerate(STAGES):
                session.add(StageRun(job_id=job_id, index=i, kind=stage["kind"], status="pending"))
    return ids


def run_jobs(service: Service, n: int, timeout: float = 600) -> tuple[float, list[dict]]:
    """Insert n jobs, enqueue them all, wait for all; (wall seconds from the first enqueue, one row per job)."""
    from sqlalchemy import select

    from app.db.base import session_scope
    from app.db.models import Event, Job
    from worker.celery_app import enqueue_job
    from worker.lease import aware

    ids = insert_jobs(service, n)
    t0 = time.time()
    for job_id in ids:
        enqueue_job(service.settings, job_id, "cpu")
    deadline = t0 + timeout
    while True:
        with session_scope(service.settings.sqlalchemy_url) as session:
            jobs = list(session.scalars(select(Job).where(Job.id.in_(ids))))
            if all(j.status in ("succeeded", "failed", "cancelled") for j in jobs):
                break
        if time.time() > deadline:
            raise RuntimeError(f"jobs unfinished after {timeout} s: {[j.status for j in jobs]}")
        time.sleep(0.1)
    failed = [(j.id, j.failure_code, j.failure_message) for j in jobs if j.status != "succeeded"]
    if failed:
        raise RuntimeError(f"jobs failed: {failed}")
    with session_scope(service.settings.sqlalchemy_url) as session:
        events = session.execute(select(Event.job_id, Event.stage, Event.created_at).where(Event.job_id.in_(ids))
                                 .order_by(Event.job_id, Event.seq)).all()
    rows = []
    for j in jobs:
        started, finished = aware(j.started_at).timestamp(), aware(j.finished_at).timestamp()
        stages = j.report["stages"]
        # the engine's own events lie between the worker's "started" and its outcome: before the first, the
        # claim and the engine's setup (recipe, data, teacher); after the last ("final"), the full gc.collect
        # that frees the job, the artifact files (tar, checksums) and the closing transaction
        own = [aware(at).timestamp() for job_id, stage, at in events if job_id == j.id and stage != "job"]
        rows.append({"job": j.id, "queued_s": started - t0, "service_s": finished - started,
                     "engine_s": own[-1] - own[0], "setup_s": own[0] - started, "finish_s": finished - own[-1],
                     "started_s": started - t0, "finished_s": finished - t0,
                     "stage_s": [s["duration_s"] for s in stages],
                     "threads": sorted({s["evaluation"]["latency"]["threads"] for s in stages}),
                     "devices": sorted({s["device"] for s in stages})})
    return max(r["finished_s"] for r in rows), rows


def tree_cpu_seconds(pid: int) -> float:
    """user + system CPU of a process and its live descendants (the supervisor and its Celery workers)."""
    total = 0.0
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            children = [int(c) for c in fh.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        return total
    return total + sum(tree_cpu_seconds(c) for c in children)


def machine_busy_seconds() -> float:
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLK_TCK  # user..steal; guest time is already inside user


def measure(tmp: Path, url: str, workers: int, threads: int, jobs: int) -> dict:
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    with Service(tmp, url, workers=workers, worker_env=env) as service:
        run_jobs(service, workers)  # warm-up: with prefetch 1, one job for each idle worker
        worker_pids = [p.pid for p in service.procs[1:]]
        cpu0, busy0, load0 = sum(map(tree_cpu_seconds, worker_pids)), machine_busy_seconds(), os.getloadavg()[0]
        wall, rows = run_jobs(service, jobs)
        cpu1, busy1 = sum(map(tree_cpu_seconds, worker_pids)), machine_busy_seconds()
    service_s = [r["service_s"] for r in rows]
    engine_s = [r["engine_s"] for r in rows]
    by_start = sorted(rows, key=lambda r: r["started_s"])
    # one worker: the time from one job's finish to the next one's claim (ack, broker, prefetch, claim)
    gaps = [b["started_s"] - a["finished_s"] for a, b in itertools.pairwise(by_start)]
    return {
        "workers": workers, "threads_per_worker": threads, "jobs": jobs, "wall_s": wall,
        "jobs_per_min": 60 * jobs / wall,
        "mean_service_s": statistics.mean(service_s), "mean_engine_s": statistics.mean(engine_s),
        "engine_fraction": sum(engine_s) / sum(service_s),
        "mean_setup_s": statistics.mean(r["setup_s"] for r in rows),
        "mean_finish_s": statistics.mean(r["finish_s"] for r in rows),
        "mean_gap_s": statistics.mean(gaps) if workers == 1 and gaps else None,
        "first_claim_s": by_start[0]["started_s"],
        "utilisation": sum(service_s) / (workers * wall),  # share of worker-seconds spent holding a job
        "last_alone_s": wall - sorted(r["finished_s"] for r in rows)[-2] if jobs > 1 else 0.0,
        "workers_cpu_cores": (cpu1 - cpu0) / wall, "machine_busy_cores": (busy1 - busy0) / wall,
        "load_before": load0,
        "threads_seen": sorted({t for r in rows for t in r["threads"]}),
        "devices": sorted({d for r in rows for d in r["devices"]}),
        "per_job": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--database", choices=["postgres", "sqlite"], default="postgres")
    args = parser.parse_args()

    from tests import fixtures

    results = []
    with tempfile.TemporaryDirectory() as tmp, pg_database(args.database, Path(tmp)) as url:
        folder = Path(tmp)
        fixtures.make_bert(folder / "models" / "tiny-bert")
        fixtures.make_data(folder / "data" / "uploads" / "data")  # Service's settings.uploads_dir / "data"
        for label, workers, threads in CONFIGS:
            result = measure(folder, url, workers, threads, args.jobs)
            results.append({"config": label, **result})
            print(f"{label}: {result['wall_s']:.1f} s", file=sys.stderr, flush=True)

    base, two, wide = results
    for r in results:
        r["ratio_vs_1_worker_1_thread"] = base["wall_s"] / r["wall_s"]
        r["ratio_vs_1_worker_2_threads"] = wide["wall_s"] / r["wall_s"]
    print(f"{args.jobs} jobs (tiny BERT: distill 1 epoch + int8-dynamic) per configuration; database "
          f"{args.database}; {os.cpu_count()} CPUs; a warm-up job per worker first\n")
    print("| jobs | workers | threads/worker | wall s | jobs/min | ratio vs 1 worker, 1 thread "
          "| ratio vs 1 worker, 2 threads |\n|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['jobs']} | {r['workers']} | {r['threads_per_worker']} | {r['wall_s']:.1f} | "
              f"{r['jobs_per_min']:.1f} | {r['ratio_vs_1_worker_1_thread']:.2f} | "
              f"{r['ratio_vs_1_worker_2_threads']:.2f} |")

    # ratio = 2 x (a job's time alone / its time beside another) x (busy share with two / with one)
    slowdown = two["mean_service_s"] / base["mean_service_s"]
    util = two["utilisation"] / base["utilisation"]
    print("\n| config | job holds its worker (s) | setup | engine | finish | idle between jobs | worker busy "
          "| workers' CPU (cores) | machine busy (cores) | the rest (cores) |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        gap = "" if r["mean_gap_s"] is None else f"{r['mean_gap_s']:.2f}"
        print(f"| {r['config']} | {r['mean_service_s']:.2f} | {r['mean_setup_s']:.2f} | {r['mean_engine_s']:.2f} | "
              f"{r['mean_finish_s']:.2f} | {gap} | {r['utilisation']:.0%} | {r['workers_cpu_cores']:.2f} | "
              f"{r['machine_busy_cores']:.2f} | {r['machine_busy_cores'] - r['workers_cpu_cores']:.2f} |")
    print(f"\nTwo workers: ratio {two['ratio_vs_1_worker_1_thread']:.2f} = 2 x {1 / slowdown:.2f} (a job held its "
          f"worker {slowdown:.2f}x as long beside another) x {util:.2f} (busy share of the workers, two against "
          f"one; the last job ran alone for {two['last_alone_s']:.2f} s). The two workers used "
          f"{two['workers_cpu_cores']:.2f} cores of the {two['machine_busy_cores']:.2f} the machine was busy; the "
          f"rest went to PostgreSQL, Redis, the API, this script and other processes on the machine. Setup (recipe, "
          f"data, teacher) and finish (the full gc.collect that frees the job, artifact tar, checksums, the closing "
          f"transaction) are {1 - two['engine_fraction']:.0%} of the time a job holds its worker. Threads per job "
          f"seen in the reports: " + ", ".join(f"{r['config']}: {r['threads_seen']}" for r in results) + ".")

    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps({"jobs": args.jobs, "database": args.database,
                                                "cpus": os.cpu_count(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
