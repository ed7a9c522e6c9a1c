// A multi-task job's report: the students compared task by task against each task's gate, what each choice
// (a model per task, or one shared) costs in all, each student's artifact, and one chart point per student.

import { costCharts } from './chart.js';
import { fmtMB, fmtNum, h, statusBadge } from './dom.js';

const finite = (v) => v !== null && v !== undefined;

export function studentArtifact(name) {
  return `model-${name}.tar`;
}

function ownWorst(student) {
  const vals = student.tasks.map((t) => student.evaluation?.tasks?.[t]?.retention).filter(finite);
  return vals.length ? Math.min(...vals) : null;
}

function comparisonTable(report) {
  const students = report.students;
  const head = h('tr', {}, h('th', { scope: 'col' }, 'Task'), h('th', { scope: 'col', class: 'num' }, 'Gate'),
    h('th', { scope: 'col', class: 'num' }, 'Teacher'),
    ...students.map((st) => h('th', { scope: 'col', class: 'num', dataset: { student: st.name } }, st.name,
      h('div', { class: 'th-sub' }, `${st.kind} · ${st.tasks.join(', ')}`))));
  const rows = Object.entries(report.comparison).map(([task, row]) => h('tr', { dataset: { task } },
    h('th', { scope: 'row' }, task, h('div', { class: 'th-sub' }, row.metric)),
    h('td', { class: 'num', dataset: { required: row.required ?? '' } }, finite(row.required) ? `≥ ${fmtNum(row.required)}` : '—'),
    h('td', { class: 'num', dataset: { teacher: row.teacher ?? '' } }, fmtNum(row.teacher, 4)),
    ...students.map((st) => {
      const cell = row.students[st.name];
      if (!cell) return h('td', { class: 'num muted', dataset: { student: st.name } }, '—');
      const verdict = cell.passed === true ? 'pass' : cell.passed === false ? 'fail' : 'ungated';
      return h('td', { class: `num ${verdict}`, title: `${row.metric} ${fmtNum(cell.value, 4)}${cell.gated ? '' : ' (not gated on this task)'}`,
        dataset: { student: st.name, retention: cell.retention ?? '', verdict } },
      fmtNum(cell.retention), verdict === 'fail' ? h('span', { class: 'sr-only' }, ' (below the gate)') : null,
      verdict === 'ungated' ? h('span', { class: 'sr-only' }, ' (not gated)') : null);
    })));
  return h('div', { class: 'table-scroll' }, h('table', { class: 'table', id: 'comparison' },
    h('caption', {}, 'Retention per task and student; a student is gated on the tasks it was trained for (others in grey)'),
    h('thead', {}, head), h('tbody', {}, rows)));
}

function choicesTable(choices) {
  const rows = Object.entries(choices).map(([kind, c]) => h('tr', { dataset: { choice: kind } },
    h('th', { scope: 'row' }, kind === 'per-task' ? 'a model per task' : 'one shared model'),
    h('td', { class: 'num', dataset: { models: c.models } }, String(c.models)),
    h('td', { class: 'num', dataset: { size: c.size_bytes } }, fmtMB(c.size_bytes)),
    h('td', { class: 'num', dataset: { p50: c.batch1_p50_ms } }, fmtNum(c.batch1_p50_ms, 2)),
    h('td', { class: 'num', dataset: { worst: c.worst_retention ?? '' } }, fmtNum(c.worst_retention)),
    h('td', {}, statusBadge(c.passed ? 'passed' : 'failed-gate'))));
  return h('div', { class: 'table-scroll' }, h('table', { class: 'table', id: 'choices' },
    h('caption', {}, 'What each choice costs in all: models to serve, their total size, the slowest one, the worst retention on their own tasks'),
    h('thead', {}, h('tr', {}, ...['Choice', 'Models', 'Size MB', 'p50 ms', 'Worst retention', 'Gates']
      .map((t, i) => h('th', { scope: 'col', class: i && i < 5 ? 'num' : null }, t)))),
    h('tbody', {}, rows)));
}

function studentsTable(report) {
  const rows = report.students.map((st) => h('tr', { dataset: { student: st.name } },
    h('th', { scope: 'row' }, st.name), h('td', {}, st.kind), h('td', {}, st.tasks.join(', ')),
    h('td', {}, statusBadge(st.status)),
    h('td', {}, st.task_weights ? Object.entries(st.task_weights).map(([t, w]) => `${t} ${fmtNum(w, 2)}`).join(', ') : '—'),
    h('td', { class: 'mono small', dataset: { artifact: st.artifact ? studentArtifact(st.name) : '' } },
      st.artifact ? studentArtifact(st.name) : 'none: no candidate passed')));
  return h('div', { class: 'table-scroll' }, h('table', { class: 'table', id: 'students' },
    h('caption', {}, 'Each student is its own run and its own artifact (download it under Artifacts)'),
    h('thead', {}, h('tr', {}, ...['Student', 'Kind', 'Trained on', 'Status', 'Loss weights', 'Artifact']
      .map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, rows)));
}

function studentCharts(report) {
  const tasks = Object.keys(report.comparison);
  const wrap = h('div', { class: 'charts' });
  const select = h('select', { id: 'students-task' }, h('option', { value: '' }, 'worst of its own tasks'),
    ...tasks.map((t) => h('option', { value: t }, t)));
  function draw() {
    const task = select.value;
    const gates = [...new Set(tasks.map((t) => report.comparison[t].required))];
    const gate = task ? report.comparison[task].required ?? null : gates.length === 1 ? gates[0] ?? null : null;
    const teacher = report.teacher || {};
    const pts = [{ label: 'teacher', teacher: true, y: 1, size: teacher.size_bytes, p50: teacher.latency?.batch1_p50_ms },
      ...report.students.map((st) => ({ label: st.name, pass: st.status === 'succeeded',
        y: task ? st.evaluation?.tasks?.[task]?.retention : ownWorst(st),
        size: st.evaluation?.size_bytes, p50: st.evaluation?.latency?.batch1_p50_ms }))].filter((p) => finite(p.y));
    wrap.replaceChildren(...costCharts(pts, { gate, prefix: 'students-chart', line: { size: [], latency: [] } }));
  }
  select.addEventListener('change', draw);
  draw();
  return h('div', {}, h('div', { class: 'chart-controls' }, h('label', { for: 'students-task' }, 'Quality'), select), wrap);
}

export function multiSections(report) {
  return [
    h('h3', {}, 'Task by task'), comparisonTable(report),
    h('h3', {}, 'Choices'), choicesTable(report.choices || {}),
    h('h3', {}, 'Students'), studentsTable(report),
    h('h3', {}, 'Size and latency against quality, one point per student'), studentCharts(report),
  ];
}
