"""A job and its report as text for `distillery jobs show`: status and stages; a multi-task job's students
compared task by task and what each choice costs; a search's trials, its best (or best-effort) candidate and
its Pareto frontiers. A single student's report adds nothing here (its stages are in the job)."""

from __future__ import annotations

import contextlib
from typing import Any

from distillery.client import Client, Job, NotFound


def table(rows: list[list[Any]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.3f}"


def _short(shortfalls: list[dict]) -> str:
    def one(s: dict) -> str:
        noise = " (within noise)" if s.get("within_noise") else ""
        if s.get("rule") == "max_drop":  # lost more of the metric's own points than allowed
            return f"{s['task']} {s['metric']} drop {_num(s.get('drop'))} > {_num(s['required'])}{noise}"
        return f"{s['task']} {_num(s['retention'])} < {_num(s['required'])}{noise}"

    return "; ".join(one(s) for s in shortfalls)


def _cell(cell: dict | None) -> str:
    """A student's retention on a task: `ok`/`FAIL` against the gate where it is gated, in parentheses where not."""
    if cell is None:
        return "-"
    if not cell["gated"] or cell["passed"] is None:
        return f"({_num(cell['retention'])})"
    return f"{_num(cell['retention'])} {'ok' if cell['passed'] else 'FAIL'}"


def print_multi(report: dict) -> None:
    names = [s["name"] for s in report["students"]]
    print(f"\nstudents ({report.get('strategy', '-')}): retention per task; ok/FAIL against the task's gate where "
          "the student is gated, (in parentheses) where not")
    table([[task, row["metric"], _num(row["required"]), _num(row["teacher"], 4),
            *(_cell(row["students"].get(n)) for n in names)] for task, row in report["comparison"].items()],
          ["task", "metric", "gate", "teacher", *names])
    print()
    table([[s["name"], s["kind"], ",".join(s["tasks"]), s["status"], f"model-{s['name']}.tar" if s["artifact"] else "-"]
           for s in report["students"]], ["student", "kind", "tasks", "status", "artifact"])
    print("\nchoices")
    table([[kind, c["models"], _mb(c["size_bytes"]), _num(c["batch1_p50_ms"], 2), _num(c["worst_retention"]),
            "yes" if c["passed"] else "no"] for kind, c in (report.get("choices") or {}).items()],
          ["choice", "models", "size MB", "p50 ms", "worst retention", "passed"])


def print_search(report: dict) -> None:
    search = report["search"]
    tasks = sorted((report.get("teacher") or {}).get("tasks") or {})
    best, effort, front = search.get("best"), search.get("best_effort"), search.get("frontier") or {}
    objective = (search.get("objective") or {}).get("minimize", "-")
    print(f"\nsearch: {search['trials_run']} of {search['grid_size']} grid points tried, stopped by "
          f"{search['stopped_by']} (minimizing {objective})")

    def mark(trial_id: str) -> str:
        return "best" if best and best["id"] == trial_id else "best effort" if effort and effort["id"] == trial_id \
            else ""

    table([[t.get("order", ""), t["id"], t["point"]["depth"], t["point"]["sparsity"], t["point"]["quantization"],
            t["point"]["embeddings"], _mb(t["size_bytes"]), _num(t["latency_ms"], 2), _num(t["worst_retention"]),
            *(_num(t["evaluation"]["tasks"].get(k, {}).get("retention")) for k in tasks), t["status"], mark(t["id"]),
            _short(t["gate"]["shortfalls"])] for t in search["trials"]],
          ["#", "trial", "depth", "sparsity", "quantization", "embeddings", "size MB", "p50 ms", "worst", *tasks,
           "status", "chosen", "short"])
    noisy = [t["id"] for t in search["trials"] if (t["evaluation"].get("latency") or {}).get("noisy")]
    if noisy:  # its own line, so the table's cells stay numbers
        print(f"noisy latency (a busy machine: speed-ups, timed against the teacher in the same window, hold "
              f"better than ms): {', '.join(noisy)}")
    if best:
        print(f"\nbest: {best['id']} ({_mb(best['size_bytes'])} MB, p50 {_num(best['latency_ms'], 2)} ms, "
              f"worst retention {_num(best['worst_retention'])})")
    elif effort:
        print(f"\nno trial passed; best effort: {effort['id']} FAILS the gate: {_short(effort['shortfalls'])}")
    for cost in ("size", "latency"):
        print(f"frontier ({cost} vs worst retention): {', '.join(front.get(cost) or []) or '-'}")


def print_report(report: dict) -> None:
    if report.get("students") and report.get("comparison"):
        print_multi(report)
    elif isinstance((report.get("search") or {}).get("trials"), list):
        print_search(report)


def when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def progress_text(job: Job) -> str:
    p = job.progress
    if p is None or p.total is None:
        return "-"
    return f"{p.step or 0}/{p.total}" + (f" loss={p.loss:.4f}" if p.loss is not None else "")


def show_job(job: Job, client: Client | None = None) -> None:
    """The job; with a client, a finished job's report too (a multi-task job's students, a search's trials)."""
    print(f"job       {job.id}\nstatus    {job.status}\nqueue     {job.queue}\ncreated   {when(job.created_at)}\n"
          f"started   {when(job.started_at)}\nfinished  {when(job.finished_at)}\nattempts  {job.attempts}")
    if job.current_stage and not job.finished:
        print(f"stage     {job.current_stage} {progress_text(job)}")
    if job.failure is not None:
        print(f"failure   [{job.failure.code}] {job.failure.message}")
    if job.stages:
        print()
        table([[str(s.index), s.kind, s.status, f"{s.duration_s:.1f}s" if s.duration_s is not None else "-"]
               for s in job.stages], ["#", "stage", "status", "duration"])
    if client is not None and job.finished:
        with contextlib.suppress(NotFound):  # it ended before writing a report
            print_report(client.jobs.report(job.id))
