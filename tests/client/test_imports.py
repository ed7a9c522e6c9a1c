"""`import distillery` and the client stay light: no torch, no transformers, nothing of the service."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_client_does_not_load_torch():
    code = ("import sys, distillery\n"
            "from distillery import Client, AsyncClient, DistilleryError\n"
            "from distillery.client import Job, NotFound\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'app', 'worker', "
            "'fastapi', 'sqlalchemy'))\n"
            "assert not heavy, heavy\n"
            "assert callable(distillery.load_artifact)\n"  # still exported; loading it is what imports torch
            "assert 'torch' in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
