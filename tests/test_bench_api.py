"""bench/api.py: its bare baseline is served exactly as `distillery api` serves, and `--quick` runs the whole
benchmark (a real API, a worker, jobs submitted through POST /v1/jobs) and prints the table with a ratio."""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
from pathlib import Path

import uvicorn

import app.api.main
import app.cli
import worker.reconciler
from bench.api_support import LOG_FORMAT, SERVED_AS
from tests.databases import require_postgres

ROOT = Path(__file__).resolve().parents[1]


def test_the_bare_endpoint_is_served_as_distillery_api_is(monkeypatch):
    """cmd_api's uvicorn options and logging, captured without serving: the bench's SERVED_AS must match."""
    served: dict = {}
    logged: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.update(kwargs))
    monkeypatch.setattr(logging, "basicConfig", lambda **kwargs: logged.update(kwargs))
    monkeypatch.setattr(signal, "signal", lambda *a: None)  # cmd_api's own handlers: not in pytest's process
    monkeypatch.setattr(app.cli, "migrate", lambda url: None)
    monkeypatch.setattr(worker.reconciler, "start_reconciler", lambda *a: None)
    monkeypatch.setattr(app.api.main, "create_app", lambda settings: object())
    args = app.cli.build_parser().parse_args(["api"])  # the defaults a deployment gets
    assert app.cli.cmd_api(args) == 0
    assert served.pop("host") == "127.0.0.1" and served.pop("port") == 8000
    assert served == SERVED_AS
    assert logged == {"level": logging.INFO, "format": LOG_FORMAT}


def test_quick_runs_every_check_and_prints_the_table_with_a_ratio():
    """About 25 s: an API, a worker, two tiny jobs through the API, polling rounds and a 64 MB download."""
    require_postgres()
    ran = subprocess.run([sys.executable, "bench/api.py", "--quick"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    out = ran.stdout
    assert "| check | real | baseline | ratio | goal |" in out, out
    row = re.search(r"^\| GET /v1/jobs/\{id\}: requests/s \| (\d+) \| (\d+) \| (\d+\.\d\d) \| >= 0\.5 \|$", out, re.M)
    assert row is not None, out
    real, bare, ratio = int(row[1]), int(row[2]), float(row[3])
    assert real > 0 and bare > 0 and abs(ratio - real / bare) < 0.02 + 1 / bare  # rounded rps, exact ratio
    assert re.search(r"^\| GET /v1/jobs/\{id\}: errors \| 0 \| 0 \|", out, re.M), out
    logged = re.search(r"access logs included \((\d+) real and (\d+) bare requests logged\)", out)
    assert logged is not None and int(logged[1]) > 0 and int(logged[2]) > 0, out
    claim = re.search(r"^\| POST /v1/jobs to the worker's claim \(s, median\) \| (\d+\.\d+) \|", out, re.M)
    assert claim is not None and float(claim[1]) > 0, out
    assert re.search(r"^\| download 64 MB: API RSS growth \(MB\) \| -?\d+\.\d \|", out, re.M), out
