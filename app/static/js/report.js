// The report of a finished job: per-task retention against the gates, size and latency against quality
// (an SVG drawn here), and any section this page does not know yet, shown as data.

import { fmtDuration, fmtMB, fmtNum, h, s } from './dom.js';

const KNOWN = new Set(['report_version', 'task', 'device', 'recipe_sha256', 'versions', 'stages', 'teacher', 'status',
  'final', 'shortfalls', 'duration_s']);

// The retention a task must keep: gates.per_task overrides gates.min_retention (as the engine applies them).
export function required(gates, task) {
  if (!gates) return null;
  const per = gates.per_task || {};
  if (per[task] !== undefined && per[task] !== null) return Number(per[task]);
  return gates.min_retention === undefined || gates.min_retention === null ? null : Number(gates.min_retention);
}

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

function retentionTable(report, gates) {
  const tasks = taskNames(report);
  const head = h('tr', {}, h('th', { scope: 'col' }, 'Candidate'), h('th', { scope: 'col' }, 'Gate'),
    ...tasks.map((t) => {
      const metric = report.teacher?.tasks?.[t]?.metric;
      const req = required(gates, t);
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
      const req = required(gates, t);
      const ret = task?.retention;
      const pass = c.teacher || req === null || ret === null || ret === undefined ? null : ret >= req;
      const title = task ? `${task.metric} ${fmtNum(task.value, 4)} (teacher ${fmtNum(task.teacher_value, 4)})` : '';
      return h('td', { class: `num ${pass === true ? 'pass' : pass === false ? 'fail' : ''}`, title,
        dataset: { task: t, retention: ret ?? '', pass: pass === null ? '' : String(pass) } },
      ret === null || ret === undefined ? '—' : fmtNum(ret), pass === false ? h('span', { class: 'sr-only' }, ' (below the gate)') : null);
    });
    const gate = c.teacher ? h('span', { class: 'muted' }, 'reference')
      : h('span', { class: `badge badge-${c.status === 'passed' ? 'succeeded' : 'failed'}` }, c.status);
    return h('tr', { dataset: { candidate: c.label } },
      h('th', { scope: 'row' }, c.label), h('td', {}, gate), ...cells,
      h('td', { class: 'num', dataset: { size: ev.size_bytes ?? '' } }, fmtMB(ev.size_bytes)),
      h('td', { class: 'num' }, ev.parameters?.toLocaleString() ?? '—'),
      h('td', { class: 'num', dataset: { p50: ev.latency?.batch1_p50_ms ?? '' } }, fmtNum(ev.latency?.batch1_p50_ms, 2)),
      h('td', { class: 'num' }, fmtNum(ev.latency?.throughput_per_s, 1)),
      h('td', { class: 'num' }, c.stage ? fmtDuration(c.stage.duration_s) : '—'));
  });
  return h('div', { class: 'table-scroll' }, h('table', { class: 'table', id: 'retention' },
    h('caption', {}, 'Retention per eval task (student ÷ teacher on the task\'s metric), against the gates'),
    h('thead', {}, head), h('tbody', {}, body)));
}

// Round axis bounds and 4-6 ticks.
function ticks(lo, hi) {
  if (lo === hi) { lo -= lo === 0 ? 1 : Math.abs(lo) * 0.1; hi += hi === 0 ? 1 : Math.abs(hi) * 0.1; }
  const raw = (hi - lo) / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((st) => st >= raw);
  const start = Math.floor(lo / step) * step;
  const end = Math.ceil(hi / step) * step;
  const out = [];
  for (let v = start; v <= end + step / 2; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

// One scatter: x (size or latency) against quality, points joined in stage order, the gate as a line.
export function scatter({ id, title, xLabel, points, gate, xFormat }) {
  const W = 520; const H = 300; const m = { l: 56, r: 20, t: 16, b: 44 };
  const xs = points.map((p) => p.x); const ys = points.map((p) => p.y);
  if (gate !== null) ys.push(gate);
  const xt = ticks(0, Math.max(...xs));
  const yt = ticks(Math.min(...ys, 1), Math.max(...ys, 1));
  const X = (v) => m.l + ((v - xt[0]) / (xt[xt.length - 1] - xt[0])) * (W - m.l - m.r);
  const Y = (v) => H - m.b - ((v - yt[0]) / (yt[yt.length - 1] - yt[0])) * (H - m.t - m.b);
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', id, role: 'img', 'aria-labelledby': `${id}-t` },
    s('title', { id: `${id}-t` }, title),
    ...yt.map((v) => s('g', { class: 'grid' }, s('line', { x1: m.l, x2: W - m.r, y1: Y(v), y2: Y(v) }),
      s('text', { x: m.l - 8, y: Y(v) + 4, 'text-anchor': 'end' }, fmtNum(v, 2)))),
    ...xt.map((v) => s('g', { class: 'grid' }, s('line', { x1: X(v), x2: X(v), y1: m.t, y2: H - m.b }),
      s('text', { x: X(v), y: H - m.b + 16, 'text-anchor': 'middle' }, xFormat(v)))),
    s('text', { class: 'axis-label', x: (W + m.l) / 2, y: H - 6, 'text-anchor': 'middle' }, xLabel),
    s('text', { class: 'axis-label', x: 14, y: (H - m.b + m.t) / 2, 'text-anchor': 'middle',
      transform: `rotate(-90 14 ${(H - m.b + m.t) / 2})` }, 'quality retained'),
    gate !== null ? s('g', { class: 'gate' }, s('line', { x1: m.l, x2: W - m.r, y1: Y(gate), y2: Y(gate) }),
      s('text', { x: W - m.r - 4, y: Y(gate) - 5, 'text-anchor': 'end' }, `gate ${fmtNum(gate, 2)}`)) : null,
    s('polyline', { class: 'path', points: points.map((p) => `${X(p.x)},${Y(p.y)}`).join(' ') }),
    ...points.map((p) => s('g', { class: `pt ${p.teacher ? 'pt-teacher' : p.pass === false ? 'pt-fail' : 'pt-pass'}` },
      s('circle', { cx: X(p.x), cy: Y(p.y), r: 6, 'data-label': p.label, 'data-x': p.x, 'data-y': p.y },
        s('title', {}, `${p.label}: ${xFormat(p.x)} ${xLabel.split(' ')[0].toLowerCase()}, quality ${fmtNum(p.y)}`)),
      // labels near the right edge go to the point's left, so they stay inside the plot
      X(p.x) > W - 90 ? s('text', { x: X(p.x) - 9, y: Y(p.y) - 8, 'text-anchor': 'end' }, p.label)
        : s('text', { x: X(p.x) + 9, y: Y(p.y) - 8 }, p.label))));
  return svg;
}

function charts(report, gates) {
  const tasks = taskNames(report);
  const wrap = h('div', { class: 'charts' });
  const select = h('select', { id: 'chart-task' }, h('option', { value: '' }, 'mean over tasks'),
    ...tasks.map((t) => h('option', { value: t }, t)));
  function draw() {
    const task = select.value;
    const gate = task ? required(gates, task)
      : tasks.length ? Math.max(...tasks.map((t) => required(gates, t) ?? -Infinity)) : null;
    const pts = candidates(report).map((c) => ({
      label: c.label, teacher: Boolean(c.teacher), pass: c.teacher ? null : c.status === 'passed',
      y: c.teacher ? 1 : task ? c.evaluation.tasks?.[task]?.retention : meanRetention(c.evaluation, tasks),
      size: c.evaluation.size_bytes, p50: c.evaluation.latency?.batch1_p50_ms,
    })).filter((p) => p.y !== null && p.y !== undefined);
    const g = gate === -Infinity ? null : gate;
    const size = pts.filter((p) => p.size !== null && p.size !== undefined).map((p) => ({ ...p, x: p.size / 1e6 }));
    const lat = pts.filter((p) => p.p50 !== null && p.p50 !== undefined).map((p) => ({ ...p, x: p.p50 }));
    wrap.replaceChildren(
      h('figure', {}, size.length ? scatter({ id: 'chart-size', title: 'Size on disk against quality', xLabel: 'Size (MB)',
        points: size, gate: g, xFormat: (v) => fmtNum(v, v < 1 ? 3 : 1) }) : h('p', { class: 'muted' }, 'No sizes.'),
      h('figcaption', {}, 'Size on disk (MB) against quality')),
      h('figure', {}, lat.length ? scatter({ id: 'chart-latency', title: 'Latency against quality', xLabel: 'p50 latency (ms, batch 1)',
        points: lat, gate: g, xFormat: (v) => fmtNum(v, v < 10 ? 2 : 0) }) : h('p', { class: 'muted' }, 'No latencies.'),
      h('figcaption', {}, 'Batch-1 p50 latency (ms) against quality')));
  }
  select.addEventListener('change', draw);
  draw();
  return h('div', {}, h('div', { class: 'chart-controls' }, h('label', { for: 'chart-task' }, 'Quality'), select), wrap);
}

export function renderReport(report, job) {
  const gates = job?.request?.gates || null;
  const final = report.final || {};
  const shortfalls = report.shortfalls || [];
  const extra = Object.keys(report).filter((k) => !KNOWN.has(k));
  const stageDetails = (report.stages || []).filter((st) => st.details);
  return h('div', { class: 'report' },
    h('dl', { class: 'facts' },
      h('div', {}, h('dt', {}, 'Outcome'), h('dd', { id: 'report-status' }, report.status || '—')),
      h('div', {}, h('dt', {}, 'Final candidate'), h('dd', {}, final.stage_index === null || final.stage_index === undefined
        ? 'none' : (report.stages || []).filter((st) => st.index === final.stage_index).map((st) => `${st.index}:${st.kind}`)[0] || String(final.stage_index))),
      h('div', {}, h('dt', {}, 'Task'), h('dd', {}, report.task || '—')),
      h('div', {}, h('dt', {}, 'Device'), h('dd', {}, report.device || '—')),
      h('div', {}, h('dt', {}, 'Duration'), h('dd', {}, fmtDuration(report.duration_s)))),
    shortfalls.length ? h('div', { class: 'banner banner-error', role: 'alert' }, h('strong', {}, 'Gate failed: '),
      shortfalls.map((sf) => `${sf.task} kept ${fmtNum(sf.retention)} of ${sf.metric}, needs ${fmtNum(sf.required)}`).join('; ')) : null,
    retentionTable(report, gates),
    h('h3', {}, 'Size and latency against quality'),
    charts(report, gates),
    stageDetails.length ? h('h3', {}, 'What each stage did') : null,
    ...stageDetails.map((st) => h('details', { class: 'json' }, h('summary', {}, `${st.index}:${st.kind}`),
      h('pre', {}, JSON.stringify(st.details, null, 2)))),
    extra.length ? h('h3', {}, 'More in this report') : null,
    ...extra.map((k) => h('details', { class: 'json', dataset: { section: k } }, h('summary', {}, k),
      h('pre', {}, JSON.stringify(report[k], null, 2)))));
}
