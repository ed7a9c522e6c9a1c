"""The dashboard's pure modules, run in the browser on inputs the end-to-end tests do not produce: the YAML
line locator on block, flow, multi-line and JSON recipes, and the report view on a report with sections this
dashboard does not know (the engine may add `students` or `search`) and a gate that fails."""

from __future__ import annotations

import json

from tests.dashboard.conftest import sign_in

YAML = """# comment: teacher
teacher: {model: mdl_1}
data:
  train: ds_a   # a comment: with a colon
  eval: {text: ds_b, "sts": ds_c}
stages:
  - {kind: distill, student: {layers: [0, 2]}, epochs: 1}
  - kind: prune
    method: structured
    heads: 0.25
-   # not a sequence of the mapping above: ignored
gates:
  per_task:
    sts: 0.9
evaluate: {
  latency_runs: 2,
  warmup_runs: 1
}
seed: 0
"""

EXPECTED = {"teacher": 2, "teacher.model": 2, "data": 3, "data.train": 4, "data.eval": 5, "data.eval.text": 5,
            "data.eval.sts": 5, "stages": 6, "stages.0": 7, "stages.0.kind": 7, "stages.0.student.layers": 7,
            "stages.0.student.layers.1": 7, "stages.0.epochs": 7, "stages.1": 8, "stages.1.kind": 8,
            "stages.1.method": 9, "stages.1.heads": 10, "gates.per_task.sts": 14, "evaluate.latency_runs": 16,
            "evaluate.warmup_runs": 17, "seed": 19}


def test_the_yaml_locator_finds_each_field_line(page, stack):
    sign_in(page, stack)
    page.wait_for_selector("#jobs-table")
    got = page.evaluate("""async ([text, json]) => {
        const { locate, lineFor } = await import('/ui/js/yamlmap.js');
        const m = locate(text);
        const j = locate(json);
        return { yaml: Object.fromEntries(m), json: Object.fromEntries(j),
                 parent: lineFor(m, 'stages.1.sparsity'), none: lineFor(m, 'nope.x') };
    }""", [YAML, json.dumps({"teacher": {"model": "x"}, "stages": [{"kind": "a", "epochz": 1}]}, indent=2)])
    assert {k: got["yaml"].get(k) for k in EXPECTED} == EXPECTED
    assert got["parent"] == {"line": 8, "exact": False} and got["none"] is None
    assert got["json"] == {"teacher": 2, "teacher.model": 3, "stages": 5, "stages.0": 6, "stages.0.kind": 7,
                           "stages.0.epochz": 8}


def test_the_report_view_shows_unknown_sections_and_failed_gates(page, stack):
    sign_in(page, stack)
    page.wait_for_selector("#jobs-table")

    def evaluation(ret: float, size: int, p50: float) -> dict:
        return {"tasks": {"sts": {"metric": "spearman", "value": ret * 0.8, "teacher_value": 0.8, "retention": ret}},
                "size_bytes": size, "parameters": 1000, "latency": {"batch1_p50_ms": p50, "throughput_per_s": 10}}

    report = {"report_version": 1, "task": "feature-extraction", "status": "failed-gate", "device": "cpu",
              "teacher": evaluation(1.0, 4_000_000, 9.0),
              "stages": [{"index": 0, "kind": "distill", "status": "passed", "duration_s": 3.0, "details": {"steps": 7},
                          "evaluation": evaluation(0.95, 2_000_000, 4.0), "gate": {"passed": True}},
                         {"index": 1, "kind": "quantize", "status": "failed-gate", "duration_s": 1.0,
                          "evaluation": evaluation(0.85, 500_000, 2.0), "gate": {"passed": False}}],
              "final": {"stage_index": 0}, "duration_s": 5.0,
              "shortfalls": [{"task": "sts", "metric": "spearman", "retention": 0.85, "required": 0.9}],
              "students": [{"name": "small", "layers": 2}], "search": {"trials": 3}}
    job = {"request": {"gates": {"min_retention": 0.5, "per_task": {"sts": 0.9}}}}
    out = page.evaluate("""async ([report, job]) => {
        const { renderReport } = await import('/ui/js/report.js');
        const el = renderReport(report, job);
        document.querySelector('#view').replaceChildren(el);
        const cells = [...el.querySelectorAll('#retention td[data-task]')].map(c => [c.textContent, c.className]);
        const sections = [...el.querySelectorAll('details[data-section]')].map(d => [d.dataset.section,
            JSON.parse(d.querySelector('pre').textContent)]);
        const gate = el.querySelector('#chart-size .gate text').textContent;
        const failed = [...el.querySelectorAll('#chart-size .pt-fail circle')].map(c => c.dataset.label);
        return { cells, sections, gate, failed, final: el.querySelector('.facts').textContent };
    }""", [report, job])
    assert out["cells"] == [["1.000", "num "], ["0.950", "num pass"], ["0.850 (below the gate)", "num fail"]]
    assert out["sections"] == [["students", report["students"]], ["search", report["search"]]]
    assert out["gate"] == "gate 0.90" and out["failed"] == ["1:quantize"]
    assert "0:distill" in out["final"]


def test_the_report_view_shows_intervals_and_words_each_gate_rule(page, stack):
    """Issue 13: a task's bootstrap interval beside its retention, and a max_drop shortfall in points lost."""
    sign_in(page, stack)
    page.wait_for_selector("#jobs-table")
    task = {"metric": "accuracy", "value": 0.66, "teacher_value": 0.69, "retention": 0.9565,
            "interval": [0.61, 0.71], "retention_interval": [0.91, 0.99]}
    evaluation = {"tasks": {"topics": task}, "size_bytes": 1000, "parameters": 10,
                  "latency": {"batch1_p50_ms": 1.0, "throughput_per_s": 10}}
    report = {"report_version": 1, "task": "feature-extraction", "status": "failed-gate", "device": "cpu",
              "teacher": {**evaluation, "tasks": {"topics": {**task, "value": 0.69, "retention": 1.0}}},
              "stages": [{"index": 0, "kind": "quantize", "status": "failed-gate", "duration_s": 1.0,
                          "evaluation": evaluation, "gate": {"passed": False}}],
              "final": {"stage_index": None}, "duration_s": 2.0,
              "shortfalls": [{"task": "topics", "metric": "accuracy", "retention": 0.9565, "required": 0.01,
                              "short_by": 0.02, "rule": "max_drop", "drop": 0.03, "within_noise": True}]}
    out = page.evaluate("""async (report) => {
        const { renderReport } = await import('/ui/js/report.js');
        const el = renderReport(report, {});
        document.querySelector('#view').replaceChildren(el);
        const cell = el.querySelector('#retention tr[data-candidate="0:quantize"] td[data-task]');
        return { interval: cell.dataset.interval, title: cell.title, text: el.textContent };
    }""", report)
    assert out["interval"] == "[0.910, 0.990]"
    assert out["title"] == "accuracy 0.6600 [0.610, 0.710] (teacher 0.6900)"
    assert "topics lost 0.030 of accuracy, allowed at most 0.010 (within the noise of its interval)" in out["text"]
