"""Import direction, checked by import-linter's contracts in pyproject.toml: the engine stays a pure library,
the HTTP client stays light, run modes and registries do not import what chooses or reads them, and serve
does not import the CLI back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = str(Path(sys.executable).with_name("lint-imports"))


def test_every_import_contract_is_kept():
    proc = subprocess.run([LINT, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_a_broken_contract_is_reported(tmp_path):
    """The check can fail: a contract this code breaks (the API imports the engine) is reported broken."""
    config = tmp_path / "contracts.toml"
    config.write_text('[tool.importlinter]\nroot_packages = ["app", "worker"]\n\n[[tool.importlinter.contracts]]\n'
                      'name = "the API never imports the engine"\ntype = "forbidden"\nsource_modules = ["app.api"]\n'
                      'forbidden_modules = ["worker.engine"]\n')
    proc = subprocess.run([LINT, "--no-cache", str(config)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "BROKEN" in proc.stdout
