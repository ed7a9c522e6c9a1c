// The dashboard's shell: sign-in, the hash router, and the one owner-wide event feed the views share.

import { auth, call, follow, onUnauthorized } from './api.js';
import { clear, h } from './dom.js';
import { renderJob } from './job.js';
import { renderJobs } from './jobs.js';
import { renderSubmit } from './submit.js';

const view = document.getElementById('view');
const nav = document.getElementById('nav');
const signout = document.getElementById('signout');
const live = document.getElementById('live');

// ---- the owner-wide feed: GET /v1/events as SSE, one connection for every job ----
export const feed = {
  listeners: new Set(),
  stream: null,
  start() {
    if (this.stream) return;
    this.stream = follow('/v1/events', {
      onEvent: (_name, data) => this.listeners.forEach((fn) => fn(data)),
      onState: (state) => {
        live.hidden = false;
        live.textContent = state === 'live' ? 'Live' : state === 'reconnecting' ? 'Reconnecting…' : 'Offline';
        live.className = `live live-${state}`;
        // after a gap, views re-read what they show: events missed meanwhile only hint at changes
        if (state === 'live') this.listeners.forEach((fn) => fn(null));
      },
    });
  },
  stop() { this.stream?.close(); this.stream = null; live.hidden = true; },
  subscribe(fn) { this.listeners.add(fn); return () => this.listeners.delete(fn); },
};

let cleanup = null;
// Why the tab was signed out (a revoked key): kept until the next sign-in, so that a navigation racing the
// 401 (a hashchange that re-renders the sign-in form) does not wipe the message.
let signedOutBecause = '';

function signIn(message = '') {
  const input = h('input', { id: 'api-key', name: 'api-key', type: 'password', autocomplete: 'off',
    spellcheck: 'false', required: true, placeholder: 'dk_…', 'aria-describedby': 'key-help key-error' });
  const error = h('p', { id: 'key-error', class: 'field-error', role: 'alert' }, message);
  const button = h('button', { class: 'btn btn-primary', type: 'submit' }, 'Sign in');
  const form = h('form', { class: 'card signin', onsubmit: async (ev) => {
    ev.preventDefault();
    error.textContent = '';
    button.disabled = true;
    const key = input.value.trim();
    try {
      await call('/v1/jobs?limit=1', { key });
      auth.set(key);
      signedOutBecause = '';
      route();
    } catch (err) {
      error.textContent = err.problem?.detail || err.message;
      input.setAttribute('aria-invalid', 'true');
      input.focus();
    } finally {
      button.disabled = false;
    }
  } },
  h('h1', {}, 'Sign in'),
  h('label', { for: 'api-key' }, 'API key'),
  input,
  h('p', { id: 'key-help', class: 'hint' }, 'Create one with ', h('code', {}, 'distillery keys create --owner TEAM'),
    '. It stays in this tab only (session storage).'),
  error, button);
  clear(view, h('div', { class: 'center' }, form));
  input.focus();
}

function route(message = '') {
  cleanup?.();
  cleanup = null;
  const signedIn = Boolean(auth.get());
  nav.hidden = !signedIn;
  signout.hidden = !signedIn;
  if (!signedIn) { feed.stop(); signIn(message || signedOutBecause); return; }
  feed.start();
  const hash = location.hash.replace(/^#/, '') || '/';
  const job = /^\/jobs\/([\w-]+)$/.exec(hash);
  const name = job ? 'job' : hash === '/new' ? 'new' : 'jobs';
  for (const a of nav.querySelectorAll('a')) {
    if (a.dataset.route === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  clear(view);
  if (job) cleanup = renderJob(view, job[1], feed);
  else if (name === 'new') cleanup = renderSubmit(view);
  else cleanup = renderJobs(view, feed);
  view.focus({ preventScroll: true });
}

signout.addEventListener('click', () => { auth.clear(); signedOutBecause = ''; location.hash = '#/'; route(); });
onUnauthorized.add((problem) => { auth.clear(); signedOutBecause = problem?.detail || ''; route(); });
window.addEventListener('hashchange', () => route());
route();
