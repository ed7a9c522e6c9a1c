"""The job page of a multi-task job and of a search job, on real reports of the engine (tests/engine_reports.py)
written into the service's database as a worker leaves them: every table cell and chart point against the
report's numbers, the students' artifacts labelled, a search's trial events shown live as they arrive."""

from __future__ import annotations

from tests.dashboard.conftest import shot, sign_in
from tests.engine_reports import add_events, finish_job, insert_job

POINTS = "cs => cs.map(c => [c.dataset.label, +c.dataset.x, +c.dataset.y])"
XY = "cs => cs.map(c => c.getAttribute('cx') + ',' + c.getAttribute('cy'))"
LABELS = "ls => ls.map(l => [l.querySelector('strong').textContent, l.querySelector('.art-label')?.dataset.label])"


def cells(page, selector: str) -> list[list]:
    """Each cell's text, retention (as a number) and verdict."""
    return page.eval_on_selector_all(selector, "els => els.map(e => [e.textContent.trim(), +e.dataset.retention, "
                                               "e.dataset.verdict])")


def test_a_multi_task_job_compares_students_task_by_task(page, stack, engine_reports):
    recipe, report = engine_reports["multi"]["recipe"], engine_reports["multi"]["report"]
    students = report["students"]
    kept = [s["name"] for s in students if s["artifact"]]
    assert kept and len(kept) < len(students)  # some students fail their gate: pass and fail cells both shown
    job_id = insert_job(stack.settings, "team-a", recipe, report,
                        artifacts=[f"model-{n}.tar" for n in kept] + ["report.json", "manifest.json"])
    sign_in(page, stack)
    page.wait_for_selector("#jobs-table")
    page.goto(f"{stack.url}/#/jobs/{job_id}")
    page.wait_for_selector("#comparison tbody tr")

    cmp = report["comparison"]
    assert page.eval_on_selector_all("#comparison tbody tr", "rs => rs.map(r => r.dataset.task)") == list(cmp)
    assert page.eval_on_selector_all("#comparison thead th[data-student]", "hs => hs.map(h => h.dataset.student)") \
        == [s["name"] for s in students]
    verdicts = set()
    for task, row in cmp.items():
        tr = f"#comparison tr[data-task='{task}']"
        assert page.inner_text(f"{tr} td[data-required]") == f"≥ {row['required']:.3f}"
        assert page.inner_text(f"{tr} td[data-teacher]") == f"{row['teacher']:.4f}"
        for s in students:
            cell = row["students"][s["name"]]
            verdict = {True: "pass", False: "fail", None: "ungated"}[cell["passed"]]
            assert cell["gated"] == (task in s["tasks"])
            got = cells(page, f"{tr} td[data-student='{s['name']}']")
            assert got == [[f"{cell['retention']:.3f}" + {"fail": " (below the gate)", "ungated": " (not gated)",
                                                         "pass": ""}[verdict], cell["retention"], verdict]]
            assert verdict in page.get_attribute(f"{tr} td[data-student='{s['name']}']", "class").split()
            verdicts.add(verdict)
    assert verdicts == {"pass", "fail", "ungated"}

    for kind, choice in report["choices"].items():
        tr = f"#choices tr[data-choice='{kind}']"
        assert page.inner_text(f"{tr} td[data-models]") == str(choice["models"])
        assert page.inner_text(f"{tr} td[data-size]") == f"{choice['size_bytes'] / 1e6:.3f}"
        assert page.inner_text(f"{tr} td[data-p50]") == f"{choice['batch1_p50_ms']:.2f}"
        assert page.inner_text(f"{tr} td[data-worst]") == f"{choice['worst_retention']:.3f}"
        assert page.inner_text(f"{tr} .badge") == ("passed" if choice["passed"] else "failed-gate")
    assert set(page.eval_on_selector_all("#choices tbody tr", "rs => rs.map(r => r.dataset.choice)")) == {
        "per-task", "shared"}

    # each student's artifact, labelled with the student, in the artifacts list and the students table
    labels = dict(page.eval_on_selector_all("#artifacts li", LABELS))
    for s in students:
        if s["artifact"]:
            assert labels[f"model-{s['name']}.tar"] == f"student {s['name']} ({s['kind']}: {', '.join(s['tasks'])})"
        assert page.get_attribute(f"#students tr[data-student='{s['name']}'] td[data-artifact]", "data-artifact") \
            == (f"model-{s['name']}.tar" if s["artifact"] else "")
    assert labels["report.json"] is None

    # one point per student (and the teacher), at its size/latency and its worst retention on its own tasks
    def worst(s):
        return min(s["evaluation"]["tasks"][t]["retention"] for t in s["tasks"])

    size = page.eval_on_selector_all("#students-chart-size circle", POINTS)
    assert size == [["teacher", report["teacher"]["size_bytes"] / 1e6, 1]] + [
        [s["name"], s["evaluation"]["size_bytes"] / 1e6, worst(s)] for s in students]
    lat = page.eval_on_selector_all("#students-chart-latency circle", POINTS)
    assert [p[1] for p in lat[1:]] == [s["evaluation"]["latency"]["batch1_p50_ms"] for s in students]
    assert page.locator("#students-chart-size polyline").count() == 0  # students are not a sequence
    failing = page.eval_on_selector_all("#students-chart-size .pt-fail circle", "cs => cs.map(c => c.dataset.label)")
    assert failing == [s["name"] for s in students if s["status"] != "succeeded"]
    page.select_option("#students-task", "fragile")
    size = page.eval_on_selector_all("#students-chart-size circle", POINTS)
    assert [p[2] for p in size[1:]] == [cmp["fragile"]["students"][s["name"]]["retention"] for s in students]
    assert page.text_content("#students-chart-size .gate text") == f"gate {cmp['fragile']['required']:.2f}"
    assert page.inner_text("#report-final") == ", ".join(report["final"]["students"])
    shot(page, "multi-task-report")


def test_a_search_job_shows_trials_live_then_the_trials_best_and_frontier(page, stack, engine_reports):
    recipe, report = engine_reports["search"]["recipe"], engine_reports["search"]["report"]
    search = report["search"]
    assert search["passed"] and search["trials_run"] < search["grid_size"]
    job_id = insert_job(stack.settings, "team-a", recipe, None, status="running",
                        events=[("teacher", "loading the teacher")])
    sign_in(page, stack)
    page.wait_for_selector("#jobs-table")
    page.goto(f"{stack.url}/#/jobs/{job_id}")
    page.wait_for_selector("#events li")

    # the trials arrive one by one as events of stage search/<id>, each shown as it comes
    for t in search["trials"]:
        add_events(stack.settings, job_id, [(f"search/{t['id']}", f"trial {t['order']} of at most 4: starting"),
                                            (f"search/{t['id']}", f"trial {t['order']}: {t['status']}")])
        page.wait_for_selector(f"#events li:has-text('trial {t['order']}: {t['status']}')", timeout=10_000)
    shown = page.eval_on_selector_all("#events .ev-stage", "ss => ss.map(s => s.textContent)")
    assert shown == ["teacher"] + [f"search/{t['id']}" for t in search["trials"] for _ in range(2)]

    finish_job(stack.settings, job_id, report, ["model.tar", "report.json", "manifest.json"])
    page.wait_for_selector("#trials tbody tr", timeout=15_000)
    assert page.inner_text("#search-summary").startswith(
        f"{search['trials_run']} of {search['grid_size']} grid points tried, stopped by {search['stopped_by']}")
    best = search["best"]["id"]
    assert page.get_attribute("#search-best", "data-trial") == best
    rows = page.eval_on_selector_all("#trials tbody tr", "rs => rs.map(r => [r.dataset.trial, r.className])")
    assert rows == [[t["id"], "best" if t["id"] == best else ""] for t in search["trials"]]
    for t in search["trials"]:
        tr = f"#trials tr[data-trial='{t['id']}']"
        assert page.inner_text(f"{tr} td[data-size]") == f"{t['size_bytes'] / 1e6:.3f}"
        assert page.inner_text(f"{tr} td[data-p50]") == f"{t['latency_ms']:.2f}"
        assert page.inner_text(f"{tr} td[data-worst]") == f"{t['worst_retention']:.3f}"
        short = {s["task"] for s in t["gate"]["shortfalls"]}
        for task, ev in t["evaluation"]["tasks"].items():
            got = cells(page, f"{tr} td[data-task='{task}']")
            verdict = "fail" if task in short else "pass"
            assert got == [[f"{ev['retention']:.3f}" + (" (below the gate)" if verdict == "fail" else ""),
                            ev["retention"], verdict]]
        assert page.inner_text(f"{tr} td .badge-{t['status']}") == t["status"]
        fronts = [k for k in ("size", "latency") if t["id"] in search["frontier"][k]]
        assert page.get_attribute(f"{tr} td[data-frontier]", "data-frontier") == " ".join(fronts)

    # every trial a point (worst-task retention); the frontier joined in order; the best one marked
    for chart, key, x in (("size", "size", lambda t: t["size_bytes"] / 1e6), ("latency", "latency",
                                                                               lambda t: t["latency_ms"])):
        points = page.eval_on_selector_all(f"#search-chart-{chart} circle", POINTS)
        assert points == [[t["id"], x(t), t["worst_retention"]] for t in search["trials"]]
        front = search["frontier"][key]
        line = page.locator(f"#search-chart-{chart} polyline")
        if len(front) > 1:
            assert line.get_attribute("data-labels") == " ".join(front)
            xy = page.eval_on_selector_all(f"#search-chart-{chart} circle", XY)
            by_id = dict(zip([p[0] for p in points], xy, strict=True))
            assert line.get_attribute("points") == " ".join(by_id[i] for i in front)
        else:
            assert line.count() == 0
        assert page.eval_on_selector_all(f"#search-chart-{chart} .pt-best circle",
                                         "cs => cs.map(c => c.dataset.label)") == [best]
    label = page.locator("#artifacts li:has-text('model.tar') .art-label").get_attribute("data-label")
    assert label == f"best trial {best}"
    assert page.inner_text("#report-final") == best
    shot(page, "search-report")


def test_a_search_that_nothing_passes_marks_the_best_effort_failing(page, stack, engine_reports):
    recipe, report = engine_reports["search_failed"]["recipe"], engine_reports["search_failed"]["report"]
    search = report["search"]
    effort = search["best_effort"]
    assert report["status"] == "failed-gate" and search["best"] is None and effort
    job_id = insert_job(stack.settings, "team-a", recipe, report, artifacts=["report.json", "manifest.json"])
    sign_in(page, stack)
    page.wait_for_selector("#jobs-table")
    page.goto(f"{stack.url}/#/jobs/{job_id}")
    page.wait_for_selector("#trials tbody tr")
    banner = page.inner_text("#search-best")
    assert banner.startswith(f"No trial passed. Closest: {effort['id']}")
    for sf in effort["shortfalls"]:
        assert f"{sf['task']} {sf['retention']:.3f} < {sf['required']:.3f}" in banner
    rows = page.eval_on_selector_all("#trials tbody tr", "rs => rs.map(r => [r.dataset.trial, r.className])")
    assert rows == [[t["id"], "best-effort" if t["id"] == effort["id"] else ""] for t in search["trials"]]
    assert page.inner_text(f"#trials tr[data-trial='{effort['id']}'] th .badge") == "best effort"
    assert page.locator("#search-chart-size .pt-best").count() == 0
    assert page.locator("#search-chart-size .pt-pass").count() == 0  # every trial failed: all drawn failing
    assert page.inner_text("#report-final") == "none"
