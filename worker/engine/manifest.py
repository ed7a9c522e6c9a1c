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
from .references import ResolvedModel, hash_dir, resolve
from .stages.distill import Distill


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


def model_entry(resolved: ResolvedModel) -> dict:
    """Where a model came from and the sha256 of each of its files (a hub model's: its cached snapshot's;
    an archive's: the archive's own hash, already in its provenance)."""
    entry = dict(resolved.provenance)
    where = None if entry.get("source") == "archive" else resolved.files_dir()
    if where is not None:
        entry["files"] = hash_dir(where)
    return entry


def _students(plan: Plan) -> dict[str, dict]:
    """Explicit distillation students, by stage: resolved by the dry run or the run (or now, after a resume)."""
    out = {}
    for stage in plan.stages:
        if isinstance(stage, Distill) and stage.config.student.model is not None:
            env = plan.env
            resolved = stage.student_model or resolve(stage.config.student.model, roots=env.roots,
                                                      base_dir=env.base_dir, work_dir=env.work_dir)
            out[stage.field] = model_entry(resolved)
    return out


def build_manifest(plan: Plan, status: str, artifact_dir: Path | None, out_dir: Path) -> dict:
    teacher = model_entry(plan.teacher)
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
        "inputs": {"teacher": teacher, "students": _students(plan), "data": data},
        "artifact": None if artifact_dir is None else {
            "path": str(artifact_dir.relative_to(out_dir)),
            "files": hash_dir(artifact_dir),
        },
    }
