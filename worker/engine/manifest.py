"""manifest.json: what produced an artifact, so a run can be audited and repeated."""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

from .plan import Plan
from .references import hash_dir


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def library_versions() -> dict[str, str | None]:
    versions = {d: _version(d) for d in ("distillery", "torch", "transformers", "torchao", "safetensors",
                                         "tokenizers", "pydantic")}
    versions["python"] = sys.version.split()[0]
    versions["platform"] = platform.platform()
    return versions


def recipe_hash(plan: Plan) -> str:
    canonical = json.dumps(plan.recipe.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def build_manifest(plan: Plan, status: str, artifact_dir: Path | None, out_dir: Path) -> dict:
    teacher = dict(plan.teacher.provenance)
    if plan.teacher.local_dir is not None and teacher.get("source") != "archive":
        teacher["files"] = hash_dir(plan.teacher.local_dir)
    data = {}
    if plan.env.train is not None and not plan.task_trains:
        data["train"] = {"path": str(plan.env.train.path), "sha256": plan.env.train.sha256,
                         **plan.env.train.schema()}
    for name, ds in plan.task_trains.items():
        data[f"tasks.{name}.train"] = {"path": str(ds.path), "sha256": ds.sha256, **ds.schema()}
    for name, ds in plan.env.eval.items():
        key = f"tasks.{name}.eval" if plan.recipe.tasks else f"eval.{name}"
        data[key] = {"path": str(ds.path), "sha256": ds.sha256, **ds.schema()}
    return {
        "format_version": 1,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "status": status,
        "recipe": plan.recipe.model_dump(mode="json"),
        "recipe_sha256": recipe_hash(plan),
        "seed": plan.recipe.seed,
        "device": str(plan.env.device),
        "versions": library_versions(),
        "inputs": {"teacher": teacher, "data": data},
        "artifact": None if artifact_dir is None else {
            "path": str(artifact_dir.relative_to(out_dir)),
            "files": hash_dir(artifact_dir),
        },
    }
