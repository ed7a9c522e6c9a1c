"""The engine as a library: progress and cancel hooks, resume from checkpoints, device and report shape."""

from __future__ import annotations

import json

import pytest
import torch

from worker.engine import RunContext, parse_recipe, run
from worker.engine.errors import StageError


def _recipe(tiny_bert, data, stages, **extra):
    return parse_recipe({
        "teacher": {"source": "local", "path": str(tiny_bert)},
        "task": "feature-extraction",
        "data": {"train": str(data["train"]), "eval": {"text": str(data["eval_text"])}},
        "stages": stages,
        "evaluate": {"latency_runs": 3, "warmup_runs": 1, "throughput_batch": 4},
        **extra,
    })


DISTILL = {"kind": "distill", "student": {"num_layers": 2}, "epochs": 2, "batch_size": 16}


def test_progress_events_stream_every_phase(tiny_bert, data, tmp_path):
    events = []
    result = run(_recipe(tiny_bert, data, [DISTILL]), tmp_path / "out", roots=["/"],
                 ctx=RunContext(on_progress=events.append))
    assert result.ok
    stages = [e.stage for e in events]
    assert stages[0] == "teacher" and stages[-1] == "final" and "0:distill" in stages
    steps = [e for e in events if e.stage == "0:distill" and e.message == "training"]
    assert steps and steps[-1].step == steps[-1].total == 12 and all(e.loss is not None for e in steps)
    assert [e.step for e in steps] == sorted(e.step for e in steps)


def test_cancel_between_steps_stops_the_run(tiny_bert, data, tmp_path):
    seen = []

    def should_cancel() -> bool:
        return any(e.message == "training" for e in seen)

    result = run(_recipe(tiny_bert, data, [{**DISTILL, "epochs": 50}]), tmp_path / "out", roots=["/"],
                 ctx=RunContext(on_progress=seen.append, should_cancel=should_cancel))
    assert result.status == "cancelled" and result.artifact is None
    trained = [e.step for e in seen if e.message == "training"]
    assert max(trained) < 50 * 6  # stopped long before the planned steps
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["status"] == "cancelled"


def test_resume_skips_finished_stages_and_gives_the_same_result(tiny_bert, data, tmp_path):
    recipe = _recipe(tiny_bert, data, [DISTILL, {"kind": "evaluate", "latency_runs": 2}])
    first = run(recipe, tmp_path / "out", roots=["/"])
    events = []
    second = run(recipe, tmp_path / "out", roots=["/"], resume=True, ctx=RunContext(on_progress=events.append))
    assert [s.get("resumed") for s in second.report["stages"]] == [True, True]
    assert not any(e.message == "training" for e in events)  # nothing was trained again
    r1, r2 = (r.report["stages"][0]["evaluation"]["tasks"]["text"]["value"] for r in (first, second))
    assert r1 == pytest.approx(r2)
    # a changed recipe does not reuse the checkpoints
    changed = _recipe(tiny_bert, data, [{**DISTILL, "epochs": 1}])
    third = run(changed, tmp_path / "out", roots=["/"], resume=True)
    assert not third.report["stages"][0].get("resumed")


def test_teacher_is_not_modified_by_a_run(tiny_bert, data, tmp_path):
    before = {p.name: p.read_bytes() for p in tiny_bert.iterdir()}
    run(_recipe(tiny_bert, data, [DISTILL]), tmp_path / "out", roots=["/"])
    assert {p.name: p.read_bytes() for p in tiny_bert.iterdir()} == before


def test_hidden_state_map_out_of_range_is_refused_before_running(tiny_bert, data, tmp_path):
    bad = {**DISTILL, "hidden_states": {"layer_map": {3: 4}}}
    with pytest.raises(StageError) as info:
        run(_recipe(tiny_bert, data, [bad]), tmp_path / "out", roots=["/"])
    assert info.value.field == "stages.0.hidden_states.layer_map"
    assert not (tmp_path / "out" / "report.json").exists()


def test_quantize_must_be_last(tiny_bert, data, tmp_path):
    from worker.engine.errors import RecipeError

    stages = [{"kind": "quantize", "method": "fp16"}, DISTILL]
    with pytest.raises(RecipeError, match="quantize must be the last"):
        run(_recipe(tiny_bert, data, stages), tmp_path / "out", roots=["/"])


def test_an_artifact_that_fails_its_reload_check_stops_the_run_as_an_internal_failure(
        tiny_bert, data, tmp_path, monkeypatch, capsys):
    """A saved stage whose reload differs from the model in memory is a bug of ours: exit 1 with one clear
    line (no traceback), report.json says the artifact failed verification, and nothing is kept as final."""
    import yaml
    from safetensors.torch import load_file, save_file

    from app.cli import main
    from worker.engine import single_run as runner

    real = runner.save_candidate

    def corrupting(candidate, out):
        path = real(candidate, out)
        if out.parent.name.startswith("00-"):  # the stage's candidate, not the teacher's scratch copy
            state = load_file(path / "model.safetensors")
            key = next(k for k in state if k.endswith("intermediate.dense.weight"))
            state[key] = state[key] * -2  # one weight matrix flipped and scaled: a silently broken save
            save_file(state, path / "model.safetensors", metadata={"format": "pt"})
        return path

    monkeypatch.setattr(runner, "save_candidate", corrupting)
    recipe = {"teacher": {"source": "local", "path": str(tiny_bert)}, "task": "feature-extraction",
              "data": {"train": str(data["train"]), "eval": {"text": str(data["eval_text"])}},
              "stages": [{**DISTILL, "max_steps": 1}],
              "evaluate": {"latency_runs": 2, "warmup_runs": 0, "throughput_batch": 2}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    assert main(["compress", str(tmp_path / "r.yaml"), "--out", str(out), "--quiet", "--root", "/"]) == 1
    err = capsys.readouterr().err
    assert "internal error [artifact_failed]:" in err and "failed verification" in err and "max abs diff" in err
    assert "Traceback" not in err
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "failed" and report["final"] == {"stage_index": None, "artifact": None}
    assert report["error"]["code"] == "artifact_failed" and report["error"]["stage_index"] == 0
    assert "failed verification" in report["error"]["message"]
    assert not (out / "artifact").exists() and not (out / "stages" / "00-distill" / "stage.json").exists()


@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to "
                 "allocate 4294967296 bytes"),
])
def test_running_out_of_memory_while_reloading_an_artifact_stays_an_out_of_memory_error(
        error, tiny_bert, tmp_path, monkeypatch):
    """An allocation failure in the reload check is the job being too large for the machine (the worker reports
    out_of_memory), not a broken artifact: it propagates as it is rather than as a VerificationError."""
    from worker.engine import artifacts
    from worker.engine.candidate import Candidate
    from worker.engine.errors import VerificationError
    from worker.engine.references import ResolvedModel
    from worker.engine.tasks import get_task

    task = get_task("feature-extraction")
    model, tokenizer = task.load(ResolvedModel(str(tiny_bert)))
    candidate = Candidate(model, tokenizer, task)

    failure = error

    def reload(path, device="cpu"):
        raise failure

    monkeypatch.setattr(artifacts, "load_artifact", reload)
    with pytest.raises(type(error)) as raised:
        artifacts.verify_reload(candidate, tmp_path, ["hello"], 16)
    assert raised.value is error and not isinstance(raised.value, VerificationError)
    # any other failure to reload is still the artifact's
    failure = RuntimeError("Error(s) in loading state_dict: size mismatch for encoder.layer.0.attention.self.query")
    with pytest.raises(VerificationError, match=r"it cannot be reloaded \(Error\(s\) in loading state_dict: size"):
        artifacts.verify_reload(candidate, tmp_path, ["hello"], 16)
