// The report of a finished job: per-task retention against the gates, size and latency against quality
// (SVG, chart.js), the students of a multi-task job (report_multi.js) or the trials of a search
// (report_search.js), and any section this page does not know yet, shown as data.

import { costCharts } from './chart.js';
import { fmtDuration, fmtMB, fmtNum, h } from './dom.js';
import { gateOf } from './gates.js';
import { multiSections } from './report_multi.js';
import { searchSections } from './report_search.js';

const KNOWN = new Set(['report_version', 'task', 'device', 'recipe_sha256', 'versions', 'stages', 'teacher', 'status',
  'final', 'shortfalls', 'duration_s']);
const MULTI = ['strategy', 'students', 'comparison', 'choices'];

export { gateOf, required } from './gates.js';

function candidates(report) {
  const rows = [];
  if (report.teacher) rows.push({ label: 'teacher', status: null, evaluation: report.teacher, teacher: true });
  for (const st of report.stages || []) {
    if (st.evaluation) rows.push({ label: `${st.index}:${st.kind}`, status: st.status, evaluation: st.evaluation, stage: st });
  }
  return rows;
}

function taskNames(report) {
  const names = new Set();
  for (const c of candidates(report)) Object.keys(c.evaluation.tasks || {}).forEach((t) => names.add(t));
  return [...names].sort();
}

function meanRetention(evaluation, tasks) {
  const vals = tasks.map((t) => evaluation.tasks?.[t]?.retention).filter((v) => v !== null && v !== undefined);
  return vals.length ? vals.reduce((a, b) => a + b, 0) / vals.length : null;
}

function retentionTable(report, request) {
  const tasks = taskNames(report);
  const head = h('tr', {}, h('th', { scope: 'col' }, 'Candidate'), h('th', { scope: 'col' }, 'Gate'),
    ...tasks.map((t) => {
      const metric = report.teacher?.tasks?.[t]?.metric;
      const req = gateOf(request, t);
      return h('th', { scope: 'col', class: 'num' }, t, h('div', { class: 'th-sub' },
        `${metric || 'retention'}${req !== null ? ` · ≥ ${fmtNum(req)}` : ''}`));
    }),
    h('th', { scope: 'col', class: 'num' }, 'Size MB'), h('th', { scope: 'col', class: 'num' }, 'Parameters'),
    h('th', { scope: 'col', class: 'num' }, 'p50 ms'), h('th', { scope: 'col', class: 'num' }, 'Throughput/s'),
    h('th', { scope: 'col', class: 'num' }, 'Duration'));
  const body = candidates(report).map((c) => {
    const ev = c.evaluation;
    const cells = tasks.map((t) => {
      const task = ev.tasks?.[t];
      const req = gateOf(request, t);
      const ret = task?.retention;
      const pass = c.teacher || req === null || ret === null || ret === undefined ? null : ret >= req;
      // the bootstrap 95% interval (issue 13): of the retention in the cell (CSS shows it after the number), of
      // the metric itself in the title; a decision within the noise is marked too
      const band = (iv) => (iv ? ` [${fmtNum(iv[0])}, ${fmtNum(iv[1])}]` : '');
      const title = task ? `${task.metric} ${fmtNum(task.value, 4)}${band(task.interval)} `
        + `(teacher ${fmtNum(task.teacher_value, 4)})` : '';
      return h('td', { class: `num ${pass === true ? 'pass' : pass === false ? 'fail' : ''}`, title,
        dataset: { task: t, retention: ret ?? '', pass: pass === null ? '' : String(pass),
          interval: c.teacher ? '' : band(task?.retention_interval).trim() } },
      ret === null || ret === undefined ? '—' : fmtNum(ret), pass === false ? h('span', { class: 'sr-only' }, ' (below the gate)') : null);
    });
    const gate = c.teacher ? h('span', { class: 'muted' }, 'reference')
      : h('span', { class: `badge badge-${c.status === 'passed' ? 'succeeded' : 'failed'}` }, c.status);
    return h('tr', { dataset: { candidate: c.label } },
      h('th', { scope: 'row' }, c.label), h('td', {}, gate), ...cells,
      h('td', { class: 'num', dataset: { size: ev.size_bytes ?? '' } }, fmtMB(ev.size_bytes)),
      h('td', { class: 'num' }, ev.parameters?.toLocaleString() ?? '—'),
      // a noisy figure (a busy machine) is marked by CSS (td[data-noisy=true]::after), its reasons in the title
      h('td', { class: 'num', title: ev.latency?.noisy ? `noisy: ${(ev.latency.noisy_reasons || []).join('; ')}` : '',
        dataset: { p50: ev.latency?.batch1_p50_ms ?? '', noisy: String(!!ev.latency?.noisy) } },
      fmtNum(ev.latency?.batch1_p50_ms, 2)),
      h('td', { class: 'num' }, fmtNum(ev.latency?.throughput_per_s, 1)),
      h('td', { class: 'num' }, c.stage ? fmtDuration(c.stage.duration_s) : '—'));
  });
  return h('div', { class: 'table-scroll' }, h('table', { class: 'table', id: 'retention' },
    h('caption', {}, 'Retention per eval task (student ÷ teacher on the task\'s metric), against the gates'),
    h('thead', {}, head), h('tbody', {}, body)));
}

function charts(report, request) {
  const tasks = taskNames(report);
  const wrap = h('div', { class: 'charts' });
  const select = h('select', { id: 'chart-task' }, h('option', { value: '' }, 'mean over tasks'),
    ...tasks.map((t) => h('option', { value: t }, t)));
  function draw() {
    const task = select.value;
    const gate = task ? gateOf(request, task)
      : tasks.length ? Math.max(...tasks.map((t) => gateOf(request, t) ?? -Infinity)) : null;
    const pts = candidates(report).map((c) => ({
      label: c.label, teacher: Boolean(c.teacher), pass: c.teacher ? null : c.status === 'passed',
      y: c.teacher ? 1 : task ? c.evaluation.tasks?.[task]?.retention : meanRetention(c.evaluation, tasks),
      size: c.evaluation.size_bytes, p50: c.evaluation.latency?.batch1_p50_ms,
    })).filter((p) => p.y !== null && p.y !== undefined);
    wrap.replaceChildren(...costCharts(pts, { gate: gate === -Infinity ? null : gate }));
  }
  select.addEventListener('change', draw);
  draw();
  return h('div', {}, h('div', { class: 'chart-controls' }, h('label', { for: 'chart-task' }, 'Quality'), select), wrap);
}

function finalCandidate(report, multi, search) {
  const final = report.final || {};
  if (search) return final.trial || 'none';
  if (multi) return Object.keys(final.students || {}).join(', ') || 'none';
  if (final.stage_index === null || final.stage_index === undefined) return 'none';
  const st = (report.stages || []).find((x) => x.index === final.stage_index);
  return st ? `${st.index}:${st.kind}` : String(final.stage_index);
}

function shortfallText(sf) {
  const who = sf.student ? `student ${sf.student}: ` : '';
  const noise = sf.within_noise ? ' (within the noise of its interval)' : '';
  if (sf.rule === 'max_drop') {
    return `${who}${sf.task} lost ${fmtNum(sf.drop)} of ${sf.metric}, allowed at most ${fmtNum(sf.required)}${noise}`;
  }
  return `${who}${sf.task} kept ${fmtNum(sf.retention)} of ${sf.metric}, needs ${fmtNum(sf.required)}${noise}`;
}

export function renderReport(report, job) {
  const request = job?.request || null;
  const shortfalls = report.shortfalls || [];
  const multi = Boolean(report.comparison && report.students);
  const search = Boolean(report.search && Array.isArray(report.search.trials));
  const known = new Set([...KNOWN, ...(multi ? MULTI : []), ...(search ? ['search'] : [])]);
  const extra = Object.keys(report).filter((k) => !known.has(k));
  const stageDetails = (report.stages || []).filter((st) => st.details);
  return h('div', { class: 'report' },
    h('dl', { class: 'facts' },
      h('div', {}, h('dt', {}, 'Outcome'), h('dd', { id: 'report-status' }, report.status || '—')),
      h('div', {}, h('dt', {}, multi ? 'Students kept' : search ? 'Chosen trial' : 'Final candidate'),
        h('dd', { id: 'report-final' }, finalCandidate(report, multi, search))),
      h('div', {}, h('dt', {}, 'Task'), h('dd', {}, report.task || '—')),
      multi ? h('div', {}, h('dt', {}, 'Strategy'), h('dd', {}, report.strategy || '—')) : null,
      h('div', {}, h('dt', {}, 'Device'), h('dd', {}, report.device || '—')),
      h('div', {}, h('dt', {}, 'Duration'), h('dd', {}, fmtDuration(report.duration_s)))),
    shortfalls.length ? h('div', { class: 'banner banner-error', role: 'alert' }, h('strong', {}, 'Gate failed: '),
      shortfalls.map(shortfallText).join('; ')) : null,
    multi ? multiSections(report) : search ? searchSections(report, request) : [
      retentionTable(report, request),
      h('h3', {}, 'Size and latency against quality'),
      charts(report, request)],
    stageDetails.length ? h('h3', {}, 'What each stage did') : null,
    ...stageDetails.map((st) => h('details', { class: 'json' }, h('summary', {}, `${st.index}:${st.kind}`),
      h('pre', {}, JSON.stringify(st.details, null, 2)))),
    extra.length ? h('h3', {}, 'More in this report') : null,
    ...extra.map((k) => h('details', { class: 'json', dataset: { section: k } }, h('summary', {}, k),
      h('pre', {}, JSON.stringify(report[k], null, 2)))));
}
