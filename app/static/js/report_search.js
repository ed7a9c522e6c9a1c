// A search job's report: how much of the grid was tried and why it stopped, the best candidate (or, when
// nothing passed, the closest one and its shortfalls), every trial, and the Pareto frontiers drawn as lines.

import { costCharts } from './chart.js';
import { fmtMB, fmtNum, h, statusBadge } from './dom.js';
import { gateOf } from './gates.js';

const STOPPED = { done: 'nothing left could beat the best', max_trials: 'max_trials', time_budget: 'time_budget_s' };

function shortText(shortfalls) {
  return shortfalls.map((sf) => `${sf.task} ${fmtNum(sf.retention)} < ${fmtNum(sf.required)}`).join('; ');
}

function pointText(p) {
  return `depth ${p.depth}, sparsity ${p.sparsity}, ${p.quantization}${p.embeddings === 'int8' ? ', int8 embeddings' : ''}`;
}

function summary(search, trials) {
  const best = search.best;
  const effort = search.best_effort;
  const tried = h('p', { id: 'search-summary' }, `${search.trials_run} of ${search.grid_size} grid points tried, `
    + `stopped by ${search.stopped_by}`, h('span', { class: 'muted' }, ` (${STOPPED[search.stopped_by] || search.stopped_by}; `
    + `minimizing ${search.objective?.minimize ?? '—'}; predictions took ${fmtNum(search.probe_s, 1)} s)`));
  if (best) {
    return [tried, h('p', { id: 'search-best', dataset: { trial: best.id } }, h('strong', {}, `Best: ${best.id}`),
      ` (${pointText(best.point)}): ${fmtMB(best.size_bytes)} MB, p50 ${fmtNum(best.latency_ms, 2)} ms, `
      + `worst retention ${fmtNum(best.worst_retention)}`)];
  }
  if (!effort) return [tried, h('p', { id: 'search-best', class: 'muted' }, 'No trial finished.')];
  const row = trials.find((t) => t.id === effort.id) || {};
  return [tried, h('div', { class: 'banner banner-error', id: 'search-best', role: 'alert', dataset: { trial: effort.id } },
    h('strong', {}, `No trial passed. Closest: ${effort.id}`),
    ` (${pointText(effort.point)}; ${fmtMB(row.size_bytes)} MB), short on ${shortText(effort.shortfalls)}`)];
}

function trialsTable(search, tasks, request) {
  const bestId = search.best?.id;
  const effortId = search.best_effort?.id;
  const front = search.frontier || {};
  const head = h('tr', {}, ...['#', 'Trial', 'Depth', 'Sparsity', 'Quantization', 'Embeddings', 'Size MB', 'p50 ms', 'Worst']
    .map((t, i) => h('th', { scope: 'col', class: i === 0 || (i > 1 && i !== 4 && i !== 5) ? 'num' : null }, t)),
  ...tasks.map((t) => h('th', { scope: 'col', class: 'num' }, t,
    h('div', { class: 'th-sub' }, gateOf(request, t) !== null ? `≥ ${fmtNum(gateOf(request, t))}` : 'not gated'))),
  h('th', { scope: 'col' }, 'Status'), h('th', { scope: 'col' }, 'Why'), h('th', { scope: 'col' }, 'Frontier'));
  const rows = search.trials.map((tr) => {
    const short = new Set((tr.gate?.shortfalls || []).map((sf) => sf.task));
    const mark = tr.id === bestId ? 'best' : tr.id === effortId ? 'best-effort' : '';
    const fronts = ['size', 'latency'].filter((k) => (front[k] || []).includes(tr.id));
    return h('tr', { class: mark || null, dataset: { trial: tr.id, status: tr.status } },
      h('td', { class: 'num' }, String(tr.order ?? '')),
      h('th', { scope: 'row', class: 'mono' }, tr.id, mark ? h('span', { class: `badge badge-${mark === 'best' ? 'passed' : 'failed'}` },
        mark === 'best' ? 'best' : 'best effort') : null),
      h('td', { class: 'num' }, String(tr.point.depth)), h('td', { class: 'num' }, String(tr.point.sparsity)),
      h('td', {}, tr.point.quantization), h('td', {}, tr.point.embeddings),
      h('td', { class: 'num', dataset: { size: tr.size_bytes ?? '' } }, fmtMB(tr.size_bytes)),
      h('td', { class: 'num', dataset: { p50: tr.latency_ms ?? '' } }, fmtNum(tr.latency_ms, 2)),
      h('td', { class: 'num', dataset: { worst: tr.worst_retention ?? '' } }, fmtNum(tr.worst_retention)),
      ...tasks.map((t) => {
        const ret = tr.evaluation?.tasks?.[t]?.retention;
        const verdict = short.has(t) ? 'fail' : gateOf(request, t) !== null ? 'pass' : '';
        return h('td', { class: `num ${verdict}`, dataset: { task: t, retention: ret ?? '', verdict } }, fmtNum(ret),
          verdict === 'fail' ? h('span', { class: 'sr-only' }, ' (below the gate)') : null);
      }),
      h('td', {}, statusBadge(tr.status)),
      h('td', { class: 'small' }, short.size ? `short: ${shortText(tr.gate.shortfalls)}` : ''),
      h('td', { class: 'small', dataset: { frontier: fronts.join(' ') } }, fronts.join(', ')));
  });
  return h('div', { class: 'table-scroll' }, h('table', { class: 'table', id: 'trials' },
    h('caption', {}, 'Every trial in the order tried: its point, size, latency and retention per task against the gates'),
    h('thead', {}, head), h('tbody', {}, rows)));
}

export function searchSections(report, request) {
  const search = report.search;
  const tasks = Object.keys(report.teacher?.tasks || {}).sort();
  const gates = [...new Set(tasks.map((t) => gateOf(request, t)))];
  const pts = search.trials.filter((t) => t.worst_retention !== null && t.worst_retention !== undefined)
    .map((t) => ({ label: t.id, y: t.worst_retention, pass: t.status === 'passed', best: t.id === search.best?.id,
      size: t.size_bytes, p50: t.latency_ms }));
  const front = search.frontier || {};
  return [
    h('h3', {}, 'Search'), ...summary(search, search.trials),
    trialsTable(search, tasks, request),
    h('h3', {}, 'Size and latency against the worst task\'s retention, Pareto frontiers joined'),
    h('div', { class: 'charts' }, ...costCharts(pts, { gate: gates.length === 1 ? gates[0] : null, prefix: 'search-chart',
      yLabel: 'worst-task retention', line: { size: front.size || [], latency: front.latency || [] } })),
  ];
}
