"""What every run mode shares: the result, the report's version, the teacher, sample texts and checkpointed
candidates. (The run modes themselves: single_run.py, students.py, search_run.py; chosen in runner.py.)"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .artifacts import load_artifact
from .candidate import Candidate
from .context import RunContext
from .plan import Plan

REPORT_VERSION = 1


@dataclass
class RunResult:
    status: str  # succeeded | failed-gate | cancelled
    report: dict
    out_dir: Path
    artifact: Path | None
    # several artifacts (students: name -> artifact directory), each downloadable on its own
    artifacts: dict[str, Path] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def sample_texts(plan: Plan) -> list[str]:
    for ds in list(plan.env.eval.values()) + ([plan.env.train] if plan.env.train else []):
        return ds.texts()[:64]
    return []


def load_teacher(plan: Plan, ctx: RunContext) -> Candidate:
    ctx.progress("teacher", "loading the teacher")
    model, tokenizer = plan.env.task.load(plan.teacher)
    device = plan.env.device
    return Candidate(model=model.to(device), tokenizer=tokenizer, task=plan.env.task, device=device)


def load_candidate(artifact_dir: Path, plan: Plan) -> Candidate:
    """A checkpointed candidate, back on the device it was measured on (int8-dynamic: CPU)."""
    model, tokenizer = load_artifact(artifact_dir, device="cpu")
    meta = json.loads((artifact_dir / "distillery.json").read_text())
    device = torch.device((meta.get("quantization") or {}).get("serving_device") or
                          plan.env.device.type) if meta.get("quantization") else plan.env.device
    return Candidate(model.to(device), tokenizer, plan.env.task, meta.get("structure") or {},
                     meta.get("quantization"), device)
