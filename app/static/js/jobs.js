// The jobs table: the newest jobs, each row kept current by the owner-wide event feed.

import { ApiError, call } from './api.js';
import { TERMINAL, clear, fmtDuration, fmtTime, h, statusBadge } from './dom.js';

// Overall progress of a job in [0, 1]: finished stages, plus the running stage's step/total.
export function jobProgress(job) {
  const stages = job.stages || [];
  if (job.status === 'succeeded') return 1;
  if (!stages.length) return 0;
  const done = stages.filter((st) => st.finished_at).length;
  const p = job.progress;
  const running = stages.find((st) => st.status === 'running');
  const frac = running && p && p.total && p.stage === `${running.index}:${running.kind}` ? Math.min(p.step / p.total, 1) : 0;
  return Math.min((done + frac) / stages.length, 1);
}

export function progressBar(job, label) {
  const value = jobProgress(job);
  const pct = Math.round(value * 100);
  const bar = h('div', { class: 'bar', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100',
    'aria-valuenow': String(pct), 'aria-label': label || `progress of ${job.id}` });
  const fill = h('div', { class: `bar-fill bar-${job.status}` });
  fill.style.width = `${pct}%`;
  bar.append(fill);
  return bar;
}

function stepText(job) {
  const p = job.progress;
  if (TERMINAL.has(job.status) || !p) return '';
  if (p.total) return `${p.step ?? 0}/${p.total}${p.loss !== null && p.loss !== undefined ? ` · loss ${Number(p.loss).toFixed(4)}` : ''}`;
  return p.message || '';
}

function elapsed(job) {
  if (!job.started_at) return null;
  const end = job.finished_at ? new Date(job.finished_at) : new Date();
  return (end - new Date(job.started_at)) / 1000;
}

function row(job) {
  const stageCount = (job.stages || []).length;
  const done = (job.stages || []).filter((st) => st.finished_at).length;
  return h('tr', { dataset: { jobId: job.id, status: job.status } },
    h('td', {}, h('a', { href: `#/jobs/${job.id}`, class: 'mono' }, job.id)),
    h('td', { class: 'status-cell' }, statusBadge(job.status)),
    h('td', { class: 'stage-cell' }, job.current_stage || '—'),
    h('td', { class: 'progress-cell' }, progressBar(job),
      h('span', { class: 'progress-text' }, `${done}/${stageCount} stages`, stepText(job) ? ` · ${stepText(job)}` : '')),
    h('td', {}, fmtTime(job.created_at)),
    h('td', { class: 'elapsed-cell' }, fmtDuration(elapsed(job))),
    h('td', { class: 'failure-cell' }, job.failure?.code || ''));
}

export function renderJobs(root, feed) {
  const jobs = new Map(); // id -> job, newest first by id
  const tbody = h('tbody');
  const empty = h('div', { class: 'empty', hidden: true }, 'No jobs yet. ',
    h('a', { href: '#/new' }, 'Submit a recipe'), ' to start one.');
  const error = h('p', { class: 'banner banner-error', role: 'alert', hidden: true });
  const filter = h('select', { id: 'status-filter', onchange: () => load() },
    ...['', 'queued', 'running', 'cancelling', 'succeeded', 'failed', 'cancelled'].map((st) =>
      h('option', { value: st }, st || 'all')));
  let alive = true;
  const pending = new Map();

  function paint() {
    // rows are rebuilt; keyboard focus on a job's link survives it
    const focused = document.activeElement?.closest?.('tr[data-job-id]')?.dataset.jobId;
    const ids = [...jobs.keys()].sort().reverse();
    clear(tbody, ids.map((id) => row(jobs.get(id))));
    empty.hidden = ids.length > 0;
    if (focused) tbody.querySelector(`tr[data-job-id="${CSS.escape(focused)}"] a`)?.focus();
  }

  let cursor = null;
  const more = h('button', { class: 'btn', type: 'button', id: 'older', hidden: true, onclick: () => load(cursor) },
    'Load older jobs');

  // The newest page, or (with `after`) the next older one appended to what is shown.
  async function load(after = null) {
    try {
      const status = filter.value ? `&status=${filter.value}` : '';
      const page = await call(`/v1/jobs?limit=50${status}${after ? `&after=${encodeURIComponent(after)}` : ''}`);
      if (!alive) return;
      if (!after) jobs.clear();
      page.data.forEach((j) => jobs.set(j.id, j));
      cursor = page.has_more ? page.next_cursor : null;
      more.hidden = !cursor;
      error.hidden = true;
      paint();
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return;
      error.textContent = `Could not load jobs: ${err.message}`;
      error.hidden = false;
    }
  }

  // A status change, a new stage or a new job: re-read the job (debounced per job); steps only move the bar.
  function refresh(id) {
    if (pending.has(id)) return;
    pending.set(id, setTimeout(async () => {
      pending.delete(id);
      try {
        const job = await call(`/v1/jobs/${id}`);
        if (!alive || (filter.value && job.status !== filter.value && !jobs.has(id))) return;
        jobs.set(id, job);
        paint();
      } catch { /* deleted or gone: leave the row as it was */ }
    }, 150));
  }

  const unsubscribe = feed.subscribe((ev) => {
    if (ev === null) { load(); return; } // (re)connected: re-read the newest page
    const job = jobs.get(ev.job_id);
    if (!job || ev.total === null || ev.total === undefined) { refresh(ev.job_id); return; }
    job.current_stage = ev.stage;
    job.progress = { stage: ev.stage, step: ev.step, total: ev.total, loss: ev.loss, message: ev.message };
    paint();
  });
  // running jobs' elapsed time, updated in place
  const ticker = setInterval(() => {
    for (const tr of tbody.querySelectorAll('tr[data-job-id]')) {
      const job = jobs.get(tr.dataset.jobId);
      if (job && !TERMINAL.has(job.status)) tr.querySelector('.elapsed-cell').textContent = fmtDuration(elapsed(job));
    }
  }, 1000);

  root.append(
    h('div', { class: 'page-head' },
      h('h1', {}, 'Jobs'),
      h('div', { class: 'actions' },
        h('label', { for: 'status-filter', class: 'inline-label' }, 'Status'), filter,
        h('a', { class: 'btn btn-primary', href: '#/new' }, 'New job'))),
    error,
    h('div', { class: 'card table-card' },
      h('table', { class: 'table', id: 'jobs-table' },
        h('caption', { class: 'sr-only' }, 'Your jobs, newest first; updated live'),
        h('thead', {}, h('tr', {}, ...['Job', 'Status', 'Current stage', 'Progress', 'Created', 'Elapsed', 'Failure']
          .map((t) => h('th', { scope: 'col' }, t)))),
        tbody),
      empty),
    h('div', { class: 'more' }, more));
  load();
  return () => { alive = false; unsubscribe(); clearInterval(ticker); pending.forEach(clearTimeout); };
}
