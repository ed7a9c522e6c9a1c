"""`distillery jobs ...` and `distillery artifacts ...` as a shell script runs them: subprocesses against the
real service and worker, checking stdout, stderr and exit codes."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import zlib

import pytest
import yaml

from tests import fixtures
from tests.client.conftest import cli
from tests.worker.conftest import DISTILL, FAST_EVAL


@pytest.fixture
def recipe_dir(stack, tmp_path):
    """A recipe folder as a user has it: data beside the recipe (relative paths) and a teacher directory that
    the service has not seen (data of its own seed; a file added to the teacher, so that its archive differs
    from the tiny BERT uploaded elsewhere)."""
    fixtures.make_data(tmp_path / "data", seed=zlib.crc32(tmp_path.name.encode()))
    teacher = shutil.copytree(stack.teacher, tmp_path / "teacher")
    (teacher / "README.md").write_text(f"a teacher for {tmp_path.name}\n")
    return tmp_path


def write(folder, stages, name="recipe.yaml", **extra) -> str:
    recipe = {"teacher": {"source": "local", "path": str(folder / "teacher")}, "task": "feature-extraction",
              "data": {"train": "data/train.jsonl", "eval": {"text": "data/eval_text.jsonl"}},
              "stages": stages, "evaluate": FAST_EVAL, "max_length": 32, **extra}
    (folder / name).write_text(yaml.safe_dump(recipe))
    return str(folder / name)


def submitted(stderr: str) -> str:
    return re.search(r"submitted (job_\w+)", stderr)[1]


def test_submit_watch_then_list_show_report_download_resubmit_cancel(stack, recipe_dir, tmp_path):
    recipe = write(recipe_dir, [DISTILL])
    run = cli(stack, "jobs", "submit", recipe, "--watch")
    assert run.returncode == 0, run.stderr
    err = run.stderr
    assert re.search(r"data.train: uploaded data/train.jsonl as ds_\w+", err), err
    assert re.search(r"data.eval.text: uploaded data/eval_text.jsonl as ds_\w+", err)
    assert "teacher: uploading" in err and re.search(r"teacher: uploaded .* as mdl_\w+", err)
    assert "[0:distill]" in err and "step" in err and "loss=" in err  # the tqdm bar, driven by the events
    job_id = submitted(err)
    assert re.search(rf"job\s+{job_id}\nstatus\s+succeeded", run.stdout) and "distill" in run.stdout

    listed = cli(stack, "jobs", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    jobs = json.loads(listed.stdout)
    assert job_id in {j["id"] for j in jobs} and all(j["status"] for j in jobs)
    table = cli(stack, "jobs", "list", "--status", "succeeded", "--limit", "1")
    assert table.returncode == 0 and table.stdout.splitlines()[0].split()[:3] == ["id", "status", "stage"]
    assert job_id in table.stdout and len(table.stdout.splitlines()) == 2
    shown = cli(stack, "jobs", "show", job_id, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["status"] == "succeeded"
    report = cli(stack, "jobs", "report", job_id)
    assert report.returncode == 0 and json.loads(report.stdout)["status"] == "succeeded"

    arts = cli(stack, "artifacts", "list", job_id, "--json")
    assert arts.returncode == 0
    expected = {a["name"]: a["sha256"] for a in json.loads(arts.stdout)}
    got = cli(stack, "artifacts", "download", job_id, "--to", str(tmp_path / "out"), "--json")
    assert got.returncode == 0, got.stderr
    files = {f["name"]: f["path"] for f in json.loads(got.stdout)}
    assert set(files) == set(expected) == {"model.tar", "report.json", "manifest.json"}
    for name, path in files.items():
        with open(path, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == expected[name]

    # the same files again (a longer run): nothing is uploaded twice; this job is cancelled and `watch` says so
    again = cli(stack, "jobs", "submit", write(recipe_dir, [{**DISTILL, "epochs": 200}], name="long.yaml"))
    assert again.returncode == 0, again.stderr
    assert "uploaded" not in again.stderr.replace("already uploaded", "")
    assert again.stderr.count("is already uploaded as") == 3
    second = again.stdout.strip()
    assert re.fullmatch(r"job_\w+", second) and second != job_id
    waited = cli(stack, "jobs", "watch", second, "--timeout", "1")
    assert waited.returncode == 9 and "did not end within 1.0s" in waited.stderr
    cancel = cli(stack, "jobs", "cancel", second)
    assert cancel.returncode == 0 and re.fullmatch(rf"{second} (cancelling|cancelled)\n", cancel.stdout)
    watch = cli(stack, "jobs", "watch", second)
    assert watch.returncode == 130 and f"error: job {second} cancelled" in watch.stderr
    refused = cli(stack, "jobs", "cancel", job_id)  # it succeeded: a conflict
    assert refused.returncode == 7 and "has already finished" in refused.stderr


def test_a_job_that_fails_exits_non_zero_with_the_reason(stack, recipe_dir):
    # a teacher under the service's model roots (it runs on this machine) is registered by path, not uploaded
    teacher = shutil.copytree(recipe_dir / "teacher", stack.root / "models" / f"cli-{recipe_dir.name}")
    recipe = write(recipe_dir, [{"kind": "prune", "method": "magnitude", "sparsity": 0.95}],
                   gates={"min_retention": 0.999}, teacher={"source": "local", "path": str(teacher)})
    run = cli(stack, "jobs", "submit", recipe, "--watch", "--json")
    assert run.returncode == 3, run.stderr  # the quality gates refused it
    assert re.search(rf"teacher: registered {teacher} by path as mdl_\w+", run.stderr), run.stderr
    job = json.loads(run.stdout)
    assert job["status"] == "failed" and job["failure"]["code"] == "gate_failed"
    assert f"error: job {job['id']} failed: [gate_failed]" in run.stderr


def test_a_bad_recipe_exits_2_naming_the_field(stack, recipe_dir):
    typo = write(recipe_dir, [{**DISTILL, "epochz": 1}])
    run = cli(stack, "jobs", "submit", typo)
    assert run.returncode == 2 and "stages.0.epochz" in run.stderr and "Traceback" not in run.stderr
    assert "uploaded" not in run.stderr  # refused before anything went up

    no_layer = write(recipe_dir, [{"kind": "distill", "student": {"layers": [0, 9]}}])  # the service's dry run
    run = cli(stack, "jobs", "submit", no_layer)
    assert run.returncode == 2 and "stages.0.student" in run.stderr and "Traceback" not in run.stderr

    missing = write(recipe_dir, [DISTILL], data={"train": "data/nope.jsonl"})
    run = cli(stack, "jobs", "submit", missing)
    assert run.returncode == 2 and "data.train: no such file" in run.stderr
    assert "teacher:" not in run.stderr  # every file is found before the first upload
    (recipe_dir / "empty").mkdir()
    run = cli(stack, "jobs", "submit", write(recipe_dir, [DISTILL], teacher={"source": "local", "path": "empty"}))
    assert run.returncode == 2 and "teacher.path" in run.stderr and "no config.json" in run.stderr
    (recipe_dir / "broken.yaml").write_text("teacher: [unclosed\n")
    run = cli(stack, "jobs", "submit", str(recipe_dir / "broken.yaml"))
    assert run.returncode == 2 and "not valid YAML" in run.stderr


def test_errors_are_a_message_and_an_exit_code(stack, done_job):
    run = cli(stack, "jobs", "show", "job_nope")
    assert run.returncode == 5 and "no job job_nope" in run.stderr and "Traceback" not in run.stderr
    run = cli(stack, "jobs", "show", done_job.job_id, key=stack.other_key)  # another owner's job
    assert run.returncode == 5
    run = cli(stack, "jobs", "list", key="dk_wrong")
    assert run.returncode == 6 and "401" in run.stderr
    run = cli(stack, "jobs", "list", "--url", "http://127.0.0.1:9", "--retries", "0")
    assert run.returncode == 8 and "ConnectError" in run.stderr and "Traceback" not in run.stderr
    run = cli(stack, "artifacts", "download", done_job.job_id, "--to", "/tmp", "--name", "nothing.bin")
    assert run.returncode == 5 and "no artifacts named nothing.bin" in run.stderr


def test_show_prints_the_students_of_a_multi_task_job_and_the_trials_of_a_search(stack, engine_reports):
    """Real engine reports (tests/engine_reports.py) in job rows: `jobs show` prints them as tables."""
    from tests.engine_reports import insert_job

    ids = {name: insert_job(stack.settings, "team-a", r["recipe"], r["report"]) for name, r in engine_reports.items()}

    report = engine_reports["multi"]["report"]
    run = cli(stack, "jobs", "show", ids["multi"])
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    names = [s["name"] for s in report["students"]]
    header = next(i for i, line in enumerate(lines) if line.startswith("task "))
    assert lines[header].split() == ["task", "metric", "gate", "teacher", *names]
    for task, row in report["comparison"].items():
        line = next(line for line in lines[header:] if line.startswith(f"{task} "))
        expected = [task, row["metric"], f"{row['required']:.3f}", f"{row['teacher']:.4f}"]
        for name in names:
            cell = row["students"][name]
            expected += [f"({cell['retention']:.3f})"] if cell["passed"] is None else \
                [f"{cell['retention']:.3f}", "ok" if cell["passed"] else "FAIL"]
        assert line.split() == expected
    for s in report["students"]:
        line = next(line for line in lines if line.startswith(f"{s['name']} ") and s["kind"] in line)
        assert line.split()[-2:] == [s["status"], f"model-{s['name']}.tar" if s["artifact"] else "-"]
    choices = lines.index("choices")
    for kind, c in report["choices"].items():
        line = next(line for line in lines[choices:] if line.startswith(f"{kind} "))
        assert line.split() == [kind, str(c["models"]), f"{c['size_bytes'] / 1e6:.3f}", f"{c['batch1_p50_ms']:.2f}",
                                f"{c['worst_retention']:.3f}", "yes" if c["passed"] else "no"]
    # `watch` ends with the same tables: here the job has already finished, so it prints them at once
    watched = cli(stack, "jobs", "watch", ids["multi"])
    assert watched.stdout == run.stdout, (watched.stdout, watched.stderr)

    for name in ("search", "search_failed"):
        report = engine_reports[name]["report"]
        search = report["search"]
        run = cli(stack, "jobs", "show", ids[name])
        assert run.returncode == 0, run.stderr
        out = run.stdout
        assert (f"search: {search['trials_run']} of {search['grid_size']} grid points tried, stopped by "
                f"{search['stopped_by']}") in out
        rows = {line.split()[1]: line.split() for line in out.splitlines() if line[:1].isdigit()}
        assert list(rows) == [t["id"] for t in search["trials"]]
        for t in search["trials"]:
            p = t["point"]
            assert rows[t["id"]][:12] == [
                str(t["order"]), t["id"], str(p["depth"]), str(p["sparsity"]), p["quantization"], p["embeddings"],
                f"{t['size_bytes'] / 1e6:.3f}", f"{t['latency_ms']:.2f}", f"{t['worst_retention']:.3f}",
                f"{t['evaluation']['tasks']['fragile']['retention']:.3f}",
                f"{t['evaluation']['tasks']['robust']['retention']:.3f}", t["status"]]
        for cost in ("size", "latency"):
            assert f"frontier ({cost} vs worst retention): {', '.join(search['frontier'][cost])}\n" in out
        if search["best"]:
            assert rows[search["best"]["id"]][12] == "best"
            assert f"\nbest: {search['best']['id']} (" in out
        else:
            effort = search["best_effort"]
            assert rows[effort["id"]][12:14] == ["best", "effort"]
            short = "; ".join(f"{s['task']} {s['retention']:.3f} < {s['required']:.3f}"
                              + (" (within noise)" if s.get("within_noise") else "") for s in effort["shortfalls"])
            assert f"no trial passed; best effort: {effort['id']} FAILS the gate: {short}\n" in out

    raw = cli(stack, "jobs", "show", ids["search"], "--json")  # --json: the job as the API returns it
    assert raw.returncode == 0 and json.loads(raw.stdout)["id"] == ids["search"]
    assert "grid points tried" not in raw.stdout
