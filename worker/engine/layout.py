"""The layout of a run's output folder, in one place: every module that reads or writes one (the run modes,
the worker's progress, checkpoints, stage info and artifacts) asks this module where things are.

    out/
      report.json, manifest.json
      artifact/                        the final candidate (load_artifact reads it)
      work/                            scratch space, removed when the run ends
      stages/NN-kind/                  a stage's checkpoint: stage.json (its marker, written last), artifact/
      students/<name>/                 a per-task student's own run, laid out the same way
      search/nodes/<id>/               a search's shared prefix: node.json, artifact/
      search/trials/<id>/trial.json    a finished trial
      search/probe/probe.json          the probes' predicted sizes and latencies
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPORT, MANIFEST, ARTIFACT, WORK = "report.json", "manifest.json", "artifact", "work"
STAGE_MARKER, NODE_MARKER, TRIAL_MARKER, PROBE_MARKER = "stage.json", "node.json", "trial.json", "probe.json"
MARKERS = (STAGE_MARKER, NODE_MARKER, TRIAL_MARKER, PROBE_MARKER)
RESUMABLE = ("stages", "students", "search")  # what a later attempt resumes from
# where checkpoint directories lie, relative to the run's root
CHECKPOINT_SLOTS = ("stages/*", "students/*/stages/*", "search/nodes/*", "search/trials/*", "search/probe")


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @property
    def report(self) -> Path:
        return self.root / REPORT

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def artifact(self) -> Path:
        return self.root / ARTIFACT

    @property
    def work(self) -> Path:
        return self.root / WORK

    def stage_dir(self, index: int, kind: str) -> Path:
        return self.root / "stages" / f"{index:02d}-{kind}"

    def student(self, name: str) -> RunLayout:
        return RunLayout(self.root / "students" / name)

    @property
    def search_nodes(self) -> Path:
        return self.root / "search" / "nodes"

    @property
    def search_trials(self) -> Path:
        return self.root / "search" / "trials"

    @property
    def search_probe(self) -> Path:
        return self.root / "search" / "probe"

    def trial_dir(self, trial_id: str) -> Path:
        return self.search_trials / trial_id
