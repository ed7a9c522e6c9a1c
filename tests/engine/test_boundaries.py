"""The engine is a pure library: no web, queue or database imports anywhere under worker/engine."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[2] / "worker" / "engine"
# torch, transformers, pydantic and the standard library; the rest are what transformers itself
# depends on (yaml, safetensors, tokenizers, huggingface_hub: hub ids and the hub's files) and torchao, the
# quantization library the issue names.
# scikit-learn (and numpy, scipy under it): evaluation metrics and probes as the field defines them.
ALLOWED = {"torch", "transformers", "pydantic", "yaml", "safetensors", "tokenizers", "huggingface_hub", "torchao",
           "sklearn", "numpy", "scipy"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_engine_imports_only_allowed_libraries():
    stdlib = set(sys.stdlib_module_names)
    offenders = {}
    for path in ENGINE.rglob("*.py"):
        bad = {m for m in _imports(path) if m not in stdlib and m not in ALLOWED}
        if bad:
            offenders[str(path.relative_to(ENGINE))] = sorted(bad)
    assert offenders == {}


def test_importing_the_engine_loads_no_service_libraries():
    code = ("import sys, worker.engine, worker.engine.stages; "
            "print(sorted(m for m in ('fastapi', 'celery', 'sqlalchemy', 'redis', 'starlette', 'app') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ENGINE.parents[1])
    assert out.stdout.strip() == "[]"
