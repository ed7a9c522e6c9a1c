"""Real reports of the engine's multi-task and search runs, made quickly on the tiny topic classifier and the two
tasks of tests/fixtures.make_two_tasks, for the dashboard's and the CLI's tests of how those reports are shown.

- `multi`: strategy both (a student per task and a shared one), one short distill then a prune; the fragile
  task's gate (0.88) fails some students, so the comparison has pass, fail and ungated cells.
- `search`: an 8-point grid, searched (not exhaustive): a best candidate, a frontier, skipped points.
- `search_failed`: a 2-point grid whose fragile gate (0.999) nothing passes: a best-effort candidate.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

FAST = {"latency_runs": 2, "warmup_runs": 0, "throughput_batch": 2}
DISTILL = {"kind": "distill", "epochs": 2, "batch_size": 16, "lr": 2e-3}


def _recipe(teacher: Path, two_tasks: dict[str, Path], fragile_gate: float, **extra) -> dict:
    return {
        "teacher": {"source": "local", "path": str(teacher)}, "task": "sequence-classification",
        "tasks": {"fragile": {"train": str(two_tasks["fragile_train"]), "eval": str(two_tasks["fragile_eval"]),
                              "gate": fragile_gate},
                  "robust": {"train": str(two_tasks["robust_train"]), "eval": str(two_tasks["robust_eval"]),
                             "gate": 0.95}},
        "evaluate": FAST, "max_length": 32, **extra,
    }


def make_reports(teacher: Path, two_tasks: dict[str, Path], out: Path) -> dict[str, dict]:
    """name -> {"recipe", "report"}. On one thread: a few seconds, where two threads on two cores that another
    process is using take twenty times longer."""
    import torch

    from worker.engine import parse_recipe, run

    recipes = {
        "multi": _recipe(teacher, two_tasks, 0.88, strategy="both", stages=[
            {**DISTILL, "student": {"num_layers": 2}}, {"kind": "prune", "method": "structured", "neurons": 0.75}]),
        "search": _recipe(teacher, two_tasks, 0.85, stages=[DISTILL], search={"space": {
            "depth": [1, 2], "sparsity": [0, 0.75], "quantization": ["none", "int8-dynamic"]}, "max_trials": 4}),
        "search_failed": _recipe(teacher, two_tasks, 0.999, stages=[DISTILL], search={"space": {
            "depth": [1], "sparsity": [0, 0.75], "quantization": ["none"]}}),
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {name: {"recipe": r, "report": run(parse_recipe(r), out / name, roots=["/"]).report}
                for name, r in recipes.items()}
    finally:
        torch.set_num_threads(threads)


def insert_job(settings, owner: str, recipe: dict, report: dict | None, *, status: str = "succeeded",
               artifacts: list[str] = (), events: list[tuple[str, str]] = ()) -> str:
    """A job row as the worker leaves it (the recipe as its request, the report, artifact rows, events), written
    straight into the service's database: how the API, the dashboard and the CLI show it does not depend on
    who ran it."""
    from app.db.base import new_id, session_scope
    from app.db.models import Artifact, Event, Job

    job_id = new_id("job")
    now = datetime.now(UTC)
    with session_scope(settings.sqlalchemy_url) as s:
        s.add(Job(id=job_id, owner=owner, status=status, queue="cpu", request=recipe, recipe=recipe, report=report,
                  attempts=1, created_at=now, started_at=now, finished_at=None if status == "running" else now,
                  lease_owner="test" if status == "running" else None,
                  lease_expires_at=now + timedelta(hours=1) if status == "running" else None))
        s.flush()
        for name in artifacts:
            s.add(Artifact(id=new_id("art"), job_id=job_id, owner=owner, name=name, path=f"jobs/{job_id}/{name}",
                           media_type="application/x-tar", size_bytes=1000, sha256="0" * 64))
        for seq, (stage, message) in enumerate(events, 1):
            s.add(Event(job_id=job_id, seq=seq, stage=stage, message=message))
    return job_id


def add_events(settings, job_id: str, events: list[tuple[str, str]]) -> None:
    from sqlalchemy import func, select

    from app.db.base import session_scope
    from app.db.models import Event

    with session_scope(settings.sqlalchemy_url) as s:
        last = s.scalar(select(func.max(Event.seq)).where(Event.job_id == job_id)) or 0
        for seq, (stage, message) in enumerate(events, last + 1):
            s.add(Event(job_id=job_id, seq=seq, stage=stage, message=message))


def finish_job(settings, job_id: str, report: dict, artifacts: list[str] = ()) -> None:
    """A running job (insert_job(status="running")) ends: its report and artifacts, then its status."""
    from sqlalchemy import update

    from app.db.base import new_id, session_scope
    from app.db.models import Artifact, Job

    with session_scope(settings.sqlalchemy_url) as s:
        owner = s.get(Job, job_id).owner
        for name in artifacts:
            s.add(Artifact(id=new_id("art"), job_id=job_id, owner=owner, name=name, path=f"jobs/{job_id}/{name}",
                           media_type="application/x-tar", size_bytes=1000, sha256="0" * 64))
        s.execute(update(Job).where(Job.id == job_id).values(report=report, status="succeeded", lease_owner=None,
                                                            lease_expires_at=None, finished_at=datetime.now(UTC)))
