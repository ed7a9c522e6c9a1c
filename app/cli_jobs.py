"""`distillery jobs ...` and `distillery artifacts ...`: the service from a shell, through the Python client.

    export DISTILLERY_URL=http://127.0.0.1:8000 DISTILLERY_API_KEY=dk_...
    distillery jobs submit recipe.yaml --watch     # uploads the files it names, submits, follows to the end
    distillery jobs list --status running --json
    distillery artifacts download job_... --to out/

Results go to stdout (tables, or JSON with --json); progress, notes and errors to stderr. Exit codes (see
app/exit_codes.py): 0 succeeded; 2 bad input (the recipe, a 4xx naming a field); 3 the job failed its quality
gates; 4 it failed otherwise; 130 it was cancelled; 5 not found; 6 bad API key; 7 a state conflict; 8 the service
cannot be reached; 9 --timeout ran out; 10 a download did not verify; 1 anything else. Never a traceback.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distillery.client import (
    ChecksumMismatch,
    Client,
    Conflict,
    ConnectionFailed,
    DistilleryError,
    Job,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
    WaitTimeout,
)
from distillery.client.errors import BadRequest, Forbidden, PayloadTooLarge, UnsupportedMediaType, ValidationError

from .cli_report import progress_text, show_job, table, when
from .cli_submit import RecipeInputError, note, prepare
from .exit_codes import (
    EXIT_BAD_INPUT,
    EXIT_CANCELLED,
    EXIT_CHECKSUM,
    EXIT_CONFLICT,
    EXIT_GATE,
    EXIT_INTERNAL,
    EXIT_JOB_FAILED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_UNAUTHORIZED,
    EXIT_UNAVAILABLE,
)

DEFAULT_URL = "http://127.0.0.1:8000"  # where `distillery serve` listens

_EXIT_BY_ERROR: list[tuple[type[DistilleryError], int]] = [
    (ValidationError, EXIT_BAD_INPUT), (BadRequest, EXIT_BAD_INPUT), (PayloadTooLarge, EXIT_BAD_INPUT),
    (UnsupportedMediaType, EXIT_BAD_INPUT), (NotFound, EXIT_NOT_FOUND), (Unauthorized, EXIT_UNAUTHORIZED),
    (Forbidden, EXIT_UNAUTHORIZED), (Conflict, EXIT_CONFLICT), (ServiceUnavailable, EXIT_UNAVAILABLE),
    (RateLimited, EXIT_UNAVAILABLE), (ConnectionFailed, EXIT_UNAVAILABLE), (WaitTimeout, EXIT_TIMEOUT),
    (ChecksumMismatch, EXIT_CHECKSUM),
]


def exit_code(exc: DistilleryError) -> int:
    return next((code for cls, code in _EXIT_BY_ERROR if isinstance(exc, cls)), EXIT_INTERNAL)


def job_exit_code(job: Job) -> int:
    if job.status == "succeeded":
        return EXIT_OK
    if job.status == "cancelled":
        return EXIT_CANCELLED
    return EXIT_GATE if job.failure is not None and job.failure.code == "gate_failed" else EXIT_JOB_FAILED


def _handled(func: Callable[[argparse.Namespace, Client], int]) -> Callable[[argparse.Namespace], int]:
    """Open the client from --url/--api-key or the environment; turn every error into a message and a code."""

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        url = args.url or os.environ.get("DISTILLERY_URL") or DEFAULT_URL
        key = args.api_key or os.environ.get("DISTILLERY_API_KEY")
        if not key:
            print("error: no API key: pass --api-key or set DISTILLERY_API_KEY", file=sys.stderr)
            return EXIT_UNAUTHORIZED
        try:
            with Client(url, key, timeout=args.http_timeout, retries=args.retries) as client:
                return func(args, client)
        except RecipeInputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except DistilleryError as exc:
            print(f"error: {exc}", file=sys.stderr)
            for e in exc.errors:
                print(f"  {e.get('field') or 'body'}: {e.get('message')}", file=sys.stderr)
            return exit_code(exc)
        except KeyboardInterrupt:
            print("interrupted (the job, if any, carries on; `distillery jobs cancel` stops it)", file=sys.stderr)
            return EXIT_CANCELLED

    return run


# ---- output ----------------------------------------------------------------------------------------


def _dump(value: Any) -> None:
    if isinstance(value, list):
        value = [v.model_dump(mode="json") if hasattr(v, "model_dump") else v for v in value]
    elif hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    print(json.dumps(value, indent=2))


def _outcome(job: Job, as_json: bool, client: Client) -> int:
    """The finished job (and its report's tables) on stdout; why it did not succeed on stderr; the exit code
    for its status."""
    _dump(job) if as_json else show_job(job, client)
    code = job_exit_code(job)
    if code != EXIT_OK:
        reason = f"[{job.failure.code}] {job.failure.message}" if job.failure else "no reason recorded"
        print(f"error: job {job.id} {job.status}: {reason}", file=sys.stderr)
    return code


# ---- commands --------------------------------------------------------------------------------------


def _watch(client: Client, job_id: str, as_json: bool, timeout: float | None) -> int:
    from .progress import ProgressPrinter  # tqdm bars to stderr: one per stepped phase, a line otherwise

    job = client.jobs.get(job_id)
    if not job.finished:
        printer = ProgressPrinter()
        try:
            for event in client.jobs.events(job_id, follow=True, timeout=timeout):
                printer(event)  # type: ignore[arg-type]  # the same stage/message/step/total/loss fields
        finally:
            printer.close()
        job = client.jobs.get(job_id)
    return _outcome(job, as_json, client)


@_handled
def cmd_submit(args: argparse.Namespace, client: Client) -> int:
    recipe = prepare(client, Path(args.recipe))
    job = client.jobs.create(recipe, idempotency_key=args.idempotency_key)
    note(f"submitted {job.id} ({job.status})")
    if args.watch:
        return _watch(client, job.id, args.json, args.timeout)
    _dump(job) if args.json else print(job.id)  # the id alone: JOB=$(distillery jobs submit r.yaml)
    return EXIT_OK


@_handled
def cmd_list(args: argparse.Namespace, client: Client) -> int:
    jobs = list(client.jobs.list(status=args.status or None, limit=args.limit))
    if args.json:
        _dump(jobs)
    else:
        table([[j.id, j.status, j.current_stage or "-", progress_text(j), when(j.created_at),
                j.failure.code if j.failure else ""] for j in jobs],
              ["id", "status", "stage", "progress", "created", "failure"])
    return EXIT_OK


@_handled
def cmd_show(args: argparse.Namespace, client: Client) -> int:
    job = client.jobs.get(args.job)
    if args.json:
        _dump(job)
        return EXIT_OK
    show_job(job, client)
    return EXIT_OK


@_handled
def cmd_cancel(args: argparse.Namespace, client: Client) -> int:
    job = client.jobs.cancel(args.job)
    _dump(job) if args.json else print(f"{job.id} {job.status}")
    return EXIT_OK


@_handled
def cmd_watch(args: argparse.Namespace, client: Client) -> int:
    return _watch(client, args.job, args.json, args.timeout)


@_handled
def cmd_report(args: argparse.Namespace, client: Client) -> int:
    _dump(client.jobs.report(args.job))
    return EXIT_OK


@_handled
def cmd_artifacts_list(args: argparse.Namespace, client: Client) -> int:
    arts = client.artifacts.list(args.job)
    if args.json:
        _dump(arts)
    else:
        table([[a.id, a.name, f"{a.size_bytes:,}", a.sha256[:16]] for a in arts], ["id", "name", "bytes", "sha256"])
    return EXIT_OK


@_handled
def cmd_download(args: argparse.Namespace, client: Client) -> int:
    from tqdm import tqdm

    arts = [a for a in client.artifacts.list(args.job) if not args.name or a.name in args.name]
    if not arts:
        print(f"error: job {args.job} has no artifacts" + (f" named {', '.join(args.name)}" if args.name else ""),
              file=sys.stderr)
        return EXIT_NOT_FOUND
    folder = Path(args.to)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for art in arts:
        with tqdm(total=art.size_bytes, desc=art.name, unit="B", unit_scale=True, file=sys.stderr,
                  disable=args.quiet, leave=True) as bar:
            def progress(done: int, total: int | None, bar=bar) -> None:
                bar.update(done - bar.n)
            paths.append(client.artifacts.download(art, folder, resume=not args.no_resume, on_progress=progress))
    if args.json:
        _dump([{"id": a.id, "name": a.name, "path": str(p), "sha256": a.sha256} for a, p in zip(arts, paths,
                                                                                             strict=True)])
    else:
        for p in paths:
            print(p)
    return EXIT_OK


# ---- the parser ------------------------------------------------------------------------------------


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"the service (default DISTILLERY_URL, else {DEFAULT_URL})")
    common.add_argument("--api-key", help="the API key (default DISTILLERY_API_KEY)")
    common.add_argument("--http-timeout", type=float, default=60.0, help="seconds per HTTP request (default 60)")
    common.add_argument("--retries", type=int, default=3, help="retries of a call that is safe to repeat, after a "
                        "503/429 or a connection error (default 3, with exponential backoff)")
    return common


def add_commands(sub) -> None:
    """Register `jobs` and `artifacts` on the top-level subparsers."""
    common = _common()
    jobs = sub.add_parser("jobs", help="submit, list, show, watch and cancel jobs on a Distillery service")
    jsub = jobs.add_subparsers(dest="jobs_command", required=True)

    p = jsub.add_parser("submit", parents=[common], help="upload the files a recipe names, then submit it")
    p.add_argument("recipe", help="recipe file (YAML or JSON), as for `distillery compress`")
    p.add_argument("--watch", action="store_true", help="follow the job to its end; exit with its outcome")
    p.add_argument("--json", action="store_true", help="print the job as JSON")
    p.add_argument("--idempotency-key", help="resubmitting with the same key and recipe returns the same job")
    p.add_argument("--timeout", type=float, help="with --watch: stop waiting after this many seconds (exit 9)")
    p.set_defaults(func=cmd_submit)

    p = jsub.add_parser("list", parents=[common], help="jobs, newest first")
    p.add_argument("--status", action="append", help="queued, running, cancelling, succeeded, failed, "
                                                     "cancelled (repeatable or comma-separated)")
    p.add_argument("--limit", type=int, default=50, help="at most this many jobs (default 50)")
    p.add_argument("--json", action="store_true", help="a JSON array of jobs")
    p.set_defaults(func=cmd_list)

    for name, func, text in (("show", cmd_show, "a job's status, stages and failure; a multi-task job's "
                              "students task by task, a search's trials"),
                             ("cancel", cmd_cancel, "cancel a queued or running job"),
                             ("watch", cmd_watch, "follow a job's progress to its end; exit with its outcome")):
        p = jsub.add_parser(name, parents=[common], help=text)
        p.add_argument("job", help="job id (job_...)")
        p.add_argument("--json", action="store_true", help="print the job as JSON")
        if name == "watch":
            p.add_argument("--timeout", type=float, help="stop waiting after this many seconds (exit 9)")
        p.set_defaults(func=func)

    p = jsub.add_parser("report", parents=[common], help="a finished job's report (JSON)")
    p.add_argument("job", help="job id (job_...)")
    p.set_defaults(func=cmd_report)

    arts = sub.add_parser("artifacts", help="list and download what a job produced")
    asub = arts.add_subparsers(dest="artifacts_command", required=True)
    p = asub.add_parser("list", parents=[common], help="a job's artifacts")
    p.add_argument("job", help="job id (job_...)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_artifacts_list)
    p = asub.add_parser("download", parents=[common], help="download a job's artifacts (resumed, sha256 checked)")
    p.add_argument("job", help="job id (job_...)")
    p.add_argument("--to", required=True, help="the directory to put them in")
    p.add_argument("--name", action="append", help="only this artifact (repeatable), e.g. model.tar")
    p.add_argument("--no-resume", action="store_true", help="start over instead of continuing a .part file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print [{id, name, path, sha256}]")
    p.set_defaults(func=cmd_download)
