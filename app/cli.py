"""The `distillery` command line."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from .cli_jobs import add_commands as add_job_commands
from .compress_cmd import cmd_compress
from .db.migrate import migrate
from .exit_codes import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_INTERNAL, EXIT_OK


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # torchao logs its optional CUDA kernels missing, and torch its pytree deprecations, at import:
    # noise for someone compressing a model on a CPU.
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _service_settings(args: argparse.Namespace):
    from .settings import Settings, get_settings

    data_dir = getattr(args, "data_dir", None)
    return Settings(data_dir=Path(data_dir)) if data_dir else get_settings()


def _log_to_stderr() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def cmd_api(args: argparse.Namespace) -> int:
    import threading

    import uvicorn

    from worker.reconciler import start_reconciler

    from .api.main import create_app

    _log_to_stderr()
    settings = _service_settings(args)
    migrate(settings.sqlalchemy_url)
    start_reconciler(settings, threading.Event())
    # uvicorn shuts down gracefully on SIGINT/SIGTERM and then raises the signal again for the previous
    # handler; a no-op one makes that a clean exit (0) instead of death by signal.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: None)
    # Keep-alive longer than a load balancer's idle timeout (60 s on most): a server that closes first races
    # the client's next request on that connection, which then fails (uvicorn's default is 5 s).
    uvicorn.run(create_app(settings), host=args.host, port=args.port, proxy_headers=True,
                forwarded_allow_ips=args.forwarded_allow_ips, log_level="info", timeout_keep_alive=75)
    return EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    from worker.supervisor import run_workers

    _log_to_stderr()
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else []
    queue = args.queue or ("gpu" if gpus else "cpu")
    if gpus and queue != "gpu":
        print("error: --gpus goes with --queue gpu", file=sys.stderr)
        return EXIT_BAD_INPUT
    if queue == "gpu" and not gpus:
        # A gpu worker without a GPU would take jobs it cannot run: find the GPUs (nvidia-smi, in a
        # subprocess, so that this process never initialises CUDA) or refuse to start.
        from worker.supervisor import detect_gpus

        gpus, how = detect_gpus()
        if not gpus:
            print(f"error: --queue gpu, but no GPU was found ({how}); name them with --gpus 0,1,... or run "
                  "--queue cpu", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(f"distillery worker: GPUs {','.join(gpus)} found ({how})", file=sys.stderr)
    migrate(_service_settings(args).sqlalchemy_url)
    return run_workers(queue, gpus, args.concurrency, args.loglevel)


def cmd_keys_create(args: argparse.Namespace) -> int:
    from .auth import create_key
    from .db.base import session_scope

    settings = _service_settings(args)
    migrate(settings.sqlalchemy_url)
    with session_scope(settings.sqlalchemy_url) as session:
        row, secret = create_key(session, args.owner, name=args.name)
    print(f"created API key {row.id} for owner {args.owner!r}; the secret below is shown once", file=sys.stderr)
    print(secret)  # alone on stdout, so that KEY=$(distillery keys create ...) works
    return EXIT_OK


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from .auth import revoke_key
    from .db.base import session_scope

    settings = _service_settings(args)
    migrate(settings.sqlalchemy_url)
    with session_scope(settings.sqlalchemy_url) as session:
        revoked = revoke_key(session, args.key_id)
    if not revoked:
        print(f"error: no active API key {args.key_id}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"revoked API key {args.key_id}", file=sys.stderr)
    return EXIT_OK


def cmd_gc(args: argparse.Namespace) -> int:
    from .gc import run_gc

    settings = _service_settings(args)
    migrate(settings.sqlalchemy_url)
    removed = run_gc(settings, older_than_days=args.older_than_days, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for kind, items in (("artifact", removed.artifacts), ("dataset", removed.datasets), ("model", removed.models),
                        ("object", removed.objects), ("partial upload", removed.staging),
                        ("multipart upload", removed.multipart), ("model snapshot", removed.snapshots)):
        for item in items:
            print(f"{verb} {kind} {item}")
    print(f"{verb} {len(removed.artifacts)} artifacts, {len(removed.datasets)} datasets, {len(removed.models)} "
          f"models, {len(removed.objects)} store objects, {len(removed.staging)} partial uploads, "
          f"{len(removed.multipart)} multipart uploads, {len(removed.snapshots)} model snapshots, "
          f"{removed.idempotency_keys} expired idempotency keys",
          file=sys.stderr)
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from .embedded import serve

    port = args.port
    if port == 0:  # any free port (tests, or a second instance)
        import socket

        with socket.socket() as sock:
            sock.bind((args.host, 0))
            port = sock.getsockname()[1]
    return serve(args.host, port, Path(args.data_dir) if args.data_dir else None)


def _add_service_commands(sub) -> None:
    p = sub.add_parser("serve", help="run everything locally with no configuration (SQLite, an embedded "
                                     "broker, a worker and the API)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--data-dir", help="where the database, uploads and job outputs live "
                                      "(default DISTILLERY_DATA_DIR or ./distillery-data)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("api", help="serve the HTTP API (production: configure with DATABASE_URL, REDIS_URL, "
                                   "DISTILLERY_DATA_DIR)")
    p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to listen on every interface")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--forwarded-allow-ips", default="127.0.0.1",
                   help="proxies trusted for X-Forwarded-* headers")
    p.set_defaults(func=cmd_api)

    p = sub.add_parser("worker", help="run job workers (Celery, solo pool, one job at a time per process)")
    p.add_argument("--queue", choices=["cpu", "gpu"], help="the queue to take jobs from (default cpu, or gpu "
                                                           "with --gpus)")
    p.add_argument("--gpus", help="comma-separated GPU indices: one worker process per GPU, each seeing only "
                                  "its own (CUDA_VISIBLE_DEVICES); with --queue gpu and no --gpus, those that "
                                  "CUDA_VISIBLE_DEVICES names or nvidia-smi -L lists, and none is an error")
    p.add_argument("--concurrency", type=int, default=1, help="worker processes when --gpus is not given")
    p.add_argument("--loglevel", default="INFO")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("gc", help="remove uploads and job outputs older than the retention (DISTILLERY_RETENTION_"
                                  "DAYS) that no queued or running job needs")
    p.add_argument("--older-than-days", type=float, help="override the retention for this run")
    p.add_argument("--dry-run", action="store_true", help="print what would be removed; remove nothing")
    p.add_argument("--data-dir", help="the data directory of a `distillery serve` (its SQLite database)")
    p.set_defaults(func=cmd_gc)

    keys = sub.add_parser("keys", help="manage API keys (stored hashed; a secret is shown once)")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    p = ksub.add_parser("create", help="create a key and print its secret")
    p.add_argument("--owner", required=True, help="the owner: every object a key creates belongs to it")
    p.add_argument("--name", default="", help="a label for the key")
    p.add_argument("--data-dir", help="the data directory of a `distillery serve` (its SQLite database)")
    p.set_defaults(func=cmd_keys_create)
    p = ksub.add_parser("revoke", help="revoke a key by its id (key_...)")
    p.add_argument("key_id")
    p.add_argument("--data-dir", help="the data directory of a `distillery serve` (its SQLite database)")
    p.set_defaults(func=cmd_keys_revoke)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distillery", description="Distil, prune and quantize models.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("compress", help="run a recipe locally, without the service")
    p.add_argument("recipe", help="recipe file (YAML or JSON)")
    p.add_argument("--out", required=True, help="output directory (artifact, report.json, manifest.json)")
    p.add_argument("--root", action="append", default=[],
                   help="allowed root for local model and data paths (repeatable; default: the recipe's "
                        "folder and the working directory, or DISTILLERY_MODEL_ROOTS)")
    p.add_argument("--resume", action="store_true", help="skip stages already checkpointed in --out")
    p.add_argument("--dry-run", action="store_true", help="validate the recipe against model and data only")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_compress)
    _add_service_commands(sub)
    add_job_commands(sub)  # jobs, artifacts: the service through the Python client
    return parser


def _service_main(args: argparse.Namespace) -> int:
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return EXIT_CANCELLED
    except Exception as exc:  # a database or broker that cannot be reached, say: one line, no traceback
        if os.environ.get("DISTILLERY_DEBUG"):
            raise
        print(f"error: {type(exc).__name__}: {exc} (set DISTILLERY_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "compress":
        return _service_main(args)
    _quiet_libraries()
    from worker.engine.errors import EngineError

    try:
        return args.func(args)
    except EngineError as exc:
        if exc.internal:  # e.g. an artifact that failed its reload check: ours to fix, not the input's
            print(f"internal error [{exc.code}]: {exc}", file=sys.stderr)
            return EXIT_INTERNAL
        print(f"error [{exc.code}]: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as exc:  # a bug of ours: say so plainly; the traceback only on request
        if os.environ.get("DISTILLERY_DEBUG"):
            raise
        print(f"internal error: {type(exc).__name__}: {exc} (set DISTILLERY_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
