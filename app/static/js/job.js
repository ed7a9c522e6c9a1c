// A job's page: header and cancel, stage timeline, live events, artifacts, and the report once finished.

import { ApiError, call, follow, listAll } from './api.js';
import { TERMINAL, clear, fmtBytes, fmtClock, fmtDuration, fmtTime, h, statusBadge } from './dom.js';
import { jobProgress, progressBar } from './jobs.js';
import { renderReport } from './report.js';

const MAX_EVENTS = 1000; // the DOM keeps the newest ones; the API keeps all

function timeline(job) {
  const stages = job.stages || [];
  if (!stages.length) return h('p', { class: 'muted' }, 'No stages.');
  const p = job.progress;
  return h('ol', { class: 'timeline', id: 'timeline' }, stages.map((st) => {
    const label = `${st.index}:${st.kind}`;
    const running = st.status === 'running';
    const live = running && p && p.stage === label && p.total ? ` · step ${p.step}/${p.total}` : '';
    const duration = st.duration_s ?? (st.started_at && running ? (Date.now() - new Date(st.started_at)) / 1000 : null);
    return h('li', { class: `tl-item tl-${st.status}`, dataset: { stage: label, status: st.status } },
      h('span', { class: 'tl-dot', 'aria-hidden': 'true' }),
      h('div', { class: 'tl-body' },
        h('div', { class: 'tl-title' }, h('strong', {}, label), statusBadge(st.status)),
        h('div', { class: 'tl-meta' },
          h('span', {}, 'start ', h('time', { datetime: st.started_at || '' }, fmtClock(st.started_at))),
          h('span', {}, 'end ', h('time', { datetime: st.finished_at || '' }, fmtClock(st.finished_at))),
          h('span', { class: 'tl-duration' }, fmtDuration(duration), live))));
  }));
}

function eventItem(ev) {
  const step = ev.total ? `${ev.step ?? 0}/${ev.total}` : '';
  const loss = ev.loss !== null && ev.loss !== undefined ? `loss ${Number(ev.loss).toFixed(4)}` : '';
  return h('li', { class: `ev ${ev.total ? 'ev-step' : ''}`, dataset: { seq: String(ev.seq) } },
    h('time', { class: 'ev-time', datetime: ev.time }, fmtClock(ev.time)),
    h('span', { class: 'ev-stage' }, ev.stage),
    h('span', { class: 'ev-msg' }, ev.message),
    h('span', { class: 'ev-step' }, [step, loss].filter(Boolean).join(' · ')));
}

async function download(artifact, button, status) {
  button.disabled = true;
  status.textContent = 'Starting…';
  try {
    const res = await call(artifact.download_url, { raw: true, headers: { Accept: '*/*' } });
    const total = Number(res.headers.get('content-length')) || artifact.size_bytes;
    const reader = res.body.getReader();
    const chunks = [];
    let got = 0;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      chunks.push(value);
      got += value.length;
      status.textContent = `${Math.round((got / total) * 100)} %`;
    }
    const url = URL.createObjectURL(new Blob(chunks, { type: artifact.media_type }));
    const a = h('a', { href: url, download: artifact.name, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    status.textContent = `Saved (${fmtBytes(got)})`;
  } catch (err) {
    status.textContent = `Failed: ${err.message}`;
  } finally {
    button.disabled = false;
  }
}

// What an artifact holds, when the report says: a student's model (model-<name>.tar), the chosen trial's.
function artifactLabel(name, report) {
  const m = /^model-(.+)\.tar$/.exec(name);
  if (m) {
    const st = (report?.students || []).find((x) => x.name === m[1]);
    return st ? `student ${st.name} (${st.kind}: ${st.tasks.join(', ')})` : `student ${m[1]}`;
  }
  if (name === 'model.tar' && report?.search?.best) return `best trial ${report.search.best.id}`;
  return null;
}

function artifactList(artifacts, report) {
  if (!artifacts.length) return h('p', { class: 'muted' }, 'Artifacts appear when the job has finished.');
  return h('ul', { class: 'artifacts', id: 'artifacts' }, artifacts.map((a) => {
    const status = h('span', { class: 'dl-status', role: 'status', 'aria-live': 'polite' });
    const label = artifactLabel(a.name, report);
    const button = h('button', { class: 'btn', type: 'button', 'aria-label': `Download ${a.name}${label ? `, ${label}` : ''}`,
      dataset: { artifact: a.name } }, 'Download');
    button.addEventListener('click', () => download(a, button, status));
    return h('li', {},
      h('div', {}, h('strong', {}, a.name), label ? h('span', { class: 'art-label', dataset: { label } }, ` ${label}`) : null,
        h('span', { class: 'muted' }, ` ${fmtBytes(a.size_bytes)}`),
        h('div', { class: 'mono small muted', title: 'sha256' }, a.sha256)),
      h('div', { class: 'dl' }, status, button));
  }));
}

export function renderJob(root, jobId, _feed) {
  let alive = true;
  let job = null;
  let reportData = null;
  const head = h('div', { class: 'page-head' });
  const failure = h('div');
  const tl = h('div');
  const events = h('ol', { class: 'events', id: 'events', 'aria-live': 'off' });
  const eventsBox = h('div', { class: 'events-box', tabindex: '0', 'aria-label': 'Events' }, events);
  const arts = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const report = h('section', { class: 'card', id: 'report', 'aria-labelledby': 'report-h' },
    h('h2', { id: 'report-h' }, 'Report'), h('p', { class: 'muted' }, 'The report appears when the job has finished.'));
  const streamState = h('span', { class: 'muted small', id: 'events-state' });
  let refreshTimer = null;

  const barSlot = h('div', { class: 'bar-slot' });
  let headKey = '';

  // The header is rebuilt only when what it shows changes, not on every training step, so the cancel
  // button keeps keyboard focus and is never replaced under the pointer.
  function paint() {
    const key = [job.status, job.started_at, job.finished_at, job.attempts].join('|');
    if (key !== headKey) {
      headKey = key;
      paintHead();
    }
    const p = job.progress;
    const detail = TERMINAL.has(job.status) ? '' : p && p.total ? `${p.stage} · ${p.step ?? 0}/${p.total}` : job.current_stage || '';
    clear(barSlot, progressBar(job, 'job progress'), h('span', { class: 'bar-label' },
      `${Math.round(jobProgress(job) * 100)} %${detail ? ` · ${detail}` : ''}`));
    clear(failure, job.failure ? h('div', { class: 'banner banner-error', role: 'alert', id: 'failure' },
      h('strong', {}, job.failure.code || 'failed'), ': ', job.failure.message || '') : null);
    clear(tl, timeline(job));
  }

  function paintHead() {
    const cancellable = ['queued', 'running', 'cancelling'].includes(job.status);
    const cancel = h('button', { class: 'btn btn-danger', type: 'button', id: 'cancel', disabled: job.status === 'cancelling' },
      job.status === 'cancelling' ? 'Cancelling…' : 'Cancel job');
    cancel.addEventListener('click', async () => {
      if (!window.confirm(`Cancel ${job.id}? A running job stops at its next step.`)) return;
      cancel.disabled = true;
      try { job = await call(`/v1/jobs/${job.id}/cancel`, { method: 'POST' }); paint(); } catch (err) {
        cancel.disabled = false;
        window.alert(err.message);
      }
    });
    clear(head,
      h('div', {},
        h('a', { href: '#/', class: 'back' }, '← Jobs'),
        h('h1', { class: 'mono' }, job.id),
        h('div', { class: 'meta' }, h('span', { id: 'job-status', role: 'status' }, statusBadge(job.status)),
          h('span', {}, `created ${fmtTime(job.created_at)}`),
          job.started_at ? h('span', {}, `started ${fmtTime(job.started_at)}`) : null,
          job.finished_at ? h('span', {}, `finished ${fmtTime(job.finished_at)}`) : null,
          h('span', {}, `queue ${job.queue}`), job.attempts > 1 ? h('span', {}, `attempts ${job.attempts}`) : null)),
      h('div', { class: 'actions' }, barSlot, cancellable ? cancel : null));
  }

  async function loadJob() {
    job = await call(`/v1/jobs/${jobId}`);
    if (!alive) return;
    paint();
    if (TERMINAL.has(job.status)) await loadOutputs();
    else clear(arts, h('p', { class: 'muted' }, 'Artifacts appear when the job has finished.'));
  }

  async function loadOutputs() {
    const artifacts = await listAll(`/v1/jobs/${jobId}/artifacts`);
    if (!alive) return;
    let data = reportData;
    if (!data) {
      try {
        data = await call(`/v1/jobs/${jobId}/report`);
      } catch (err) {
        if (!(err instanceof ApiError && err.status === 404)) throw err;
      }
      if (!alive) return;
    }
    clear(arts, artifactList(artifacts, data));
    if (reportData) return;
    if (data) {
      reportData = data;
      clear(report, h('h2', { id: 'report-h' }, 'Report'), renderReport(data, job));
    } else clear(report, h('h2', { id: 'report-h' }, 'Report'), h('p', { class: 'muted' }, 'This job ended without a report.'));
  }

  function refreshSoon() {
    if (refreshTimer) return;
    refreshTimer = setTimeout(() => { refreshTimer = null; if (alive) loadJob().catch(() => {}); }, 150);
  }

  const stream = follow(`/v1/jobs/${jobId}/events`, {
    onEvent: (_name, ev) => {
      const atBottom = eventsBox.scrollHeight - eventsBox.scrollTop - eventsBox.clientHeight < 30;
      const last = events.lastElementChild;
      // consecutive steps of one phase replace each other: the list stays readable at any step rate
      if (ev.total && last && last.classList.contains('ev-step') && last.dataset.key === `${ev.stage}|${ev.message}`) last.remove();
      const item = eventItem(ev);
      item.dataset.key = `${ev.stage}|${ev.message}`;
      events.append(item);
      while (events.childElementCount > MAX_EVENTS) events.firstElementChild.remove();
      if (atBottom) eventsBox.scrollTop = eventsBox.scrollHeight;
      if (job && ev.total) {
        job.progress = { stage: ev.stage, step: ev.step, total: ev.total, loss: ev.loss };
        job.current_stage = ev.stage;
        paint();
      } else refreshSoon();
    },
    onEnd: () => loadJob().catch(() => {}),
    onState: (state, problem) => {
      streamState.dataset.state = state;
      streamState.textContent = state === 'live' ? '● live' : state === 'reconnecting' ? 'reconnecting…'
        : problem ? problem.detail : 'complete';
    },
  });
  const ticker = setInterval(() => { if (job && job.status === 'running') clear(tl, timeline(job)); }, 1000);

  root.append(head, failure,
    h('div', { class: 'grid-2' },
      h('section', { class: 'card', 'aria-labelledby': 'tl-h' }, h('h2', { id: 'tl-h' }, 'Stages'), tl),
      h('section', { class: 'card', 'aria-labelledby': 'ev-h' },
        h('h2', { id: 'ev-h' }, 'Events ', streamState), eventsBox)),
    h('section', { class: 'card', 'aria-labelledby': 'art-h' }, h('h2', { id: 'art-h' }, 'Artifacts'), arts),
    report);
  loadJob().catch((err) => {
    if (err instanceof ApiError && err.status === 401) return;
    clear(root, h('div', { class: 'banner banner-error', role: 'alert' }, `Cannot show ${jobId}: ${err.message}`),
      h('a', { href: '#/' }, '← Jobs'));
  });
  return () => { alive = false; stream.close(); clearInterval(ticker); clearTimeout(refreshTimer); };
}
