// The recipe form: a YAML editor whose 422 errors are marked on the line holding each field, beside the
// user's registered models and datasets, which can be inserted by id or assembled into a starting recipe.

import { load as parseYaml } from '../vendor/js-yaml.js';
import { ApiError, call, listAll } from './api.js';
import { clear, fmtBytes, h } from './dom.js';
import { lineFor, locate } from './yamlmap.js';

const DRAFT = 'distillery.recipeDraft';

function randomKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16)); // randomUUID needs a secure context; this does not
  return `dash-${[...bytes].map((b) => b.toString(16).padStart(2, '0')).join('')}`;
}

export function template(model, train, evals) {
  const evalMap = evals.length ? evals.map((d) => `${taskName(d)}: ${d.id}`).join(', ') : 'held_out: ds_...';
  return [
    '# A compression job: the teacher, its data, and the stages to run.',
    `teacher: {model: ${model ? model.id : 'mdl_...'}}`,
    'task: feature-extraction',
    'data:',
    `  train: ${train ? train.id : 'ds_...'}`,
    `  eval: {${evalMap}}`,
    'stages:',
    '  - {kind: distill, student: {num_layers: 2}, epochs: 1}',
    '  - {kind: quantize, method: int8-dynamic}',
    'gates: {min_retention: 0.5}',
    'max_length: 64',
    '',
  ].join('\n');
}

function taskName(dataset) {
  const base = dataset.name.replace(/\.(jsonl|csv)$/i, '').replace(/[^A-Za-z0-9_]+/g, '_').replace(/^_+|_+$/g, '');
  return base || 'task';
}

function editor() {
  const gutter = h('div', { class: 'gutter', 'aria-hidden': 'true' });
  const backdrop = h('div', { class: 'backdrop', 'aria-hidden': 'true' });
  const textarea = h('textarea', { id: 'recipe', name: 'recipe', spellcheck: 'false', wrap: 'off', autocomplete: 'off',
    autocapitalize: 'off', 'aria-describedby': 'recipe-help recipe-errors', rows: 24 });
  const root = h('div', { class: 'editor' }, gutter, h('div', { class: 'editor-main' }, backdrop, textarea));
  let marks = new Map(); // line -> [messages]

  function paint() {
    const lines = textarea.value.split('\n');
    clear(gutter, lines.map((_, i) => h('div', { class: marks.has(i + 1) ? 'gl error' : 'gl', dataset: { line: String(i + 1) } },
      String(i + 1))));
    clear(backdrop, lines.map((text, i) => {
      const msgs = marks.get(i + 1);
      return h('div', { class: msgs ? 'bl error' : 'bl', dataset: { line: String(i + 1) } },
        h('span', { class: 'bl-text' }, text || ' '),
        msgs ? h('span', { class: 'bl-msg' }, `  ← ${msgs.join('; ')}`) : null);
    }));
    sync();
  }
  function sync() {
    backdrop.scrollTop = textarea.scrollTop;
    backdrop.scrollLeft = textarea.scrollLeft;
    gutter.scrollTop = textarea.scrollTop;
  }
  textarea.addEventListener('input', () => { marks = new Map(); paint(); textarea.removeAttribute('aria-invalid'); });
  textarea.addEventListener('scroll', sync);
  return {
    root, textarea,
    get value() { return textarea.value; },
    set value(v) { textarea.value = v; marks = new Map(); paint(); },
    mark(m) { marks = m; paint(); },
    goTo(line) {
      const lines = textarea.value.split('\n');
      const start = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0);
      textarea.focus();
      textarea.setSelectionRange(start, start + (lines[line - 1] || '').length);
      const lh = parseFloat(getComputedStyle(textarea).lineHeight) || 20;
      textarea.scrollTop = Math.max(0, (line - 4) * lh);
      sync();
    },
    insert(text) {
      const { selectionStart: a, selectionEnd: b, value } = textarea;
      textarea.value = value.slice(0, a) + text + value.slice(b);
      textarea.setSelectionRange(a + text.length, a + text.length);
      textarea.dispatchEvent(new Event('input'));
      textarea.focus();
    },
  };
}

export function renderSubmit(root) {
  let alive = true;
  const ed = editor();
  const errors = h('ul', { id: 'recipe-errors', class: 'errors', role: 'alert', 'aria-live': 'assertive' });
  const banner = h('div');
  const submit = h('button', { class: 'btn btn-primary', type: 'submit', id: 'submit-job' }, 'Submit job');
  const models = h('div', { id: 'models' }, h('p', { class: 'muted' }, 'Loading…'));
  const datasets = h('div', { id: 'datasets' }, h('p', { class: 'muted' }, 'Loading…'));
  const modelSel = h('select', { id: 'tpl-model' });
  const trainSel = h('select', { id: 'tpl-train' });
  const evalBox = h('fieldset', { class: 'checks' }, h('legend', {}, 'Eval datasets (one task each)'));
  let modelRows = [];
  let dataRows = [];

  ed.value = sessionStorage.getItem(DRAFT) || template(null, null, []);
  ed.textarea.addEventListener('input', () => sessionStorage.setItem(DRAFT, ed.value));

  function showErrors(list) {
    // list: [{field, message, line?}] -> marks on lines, and the same messages in the list below
    const map = locate(ed.value);
    const marks = new Map();
    clear(errors, list.map((e) => {
      const at = e.line ? { line: e.line, exact: true } : lineFor(map, e.field);
      if (at) marks.set(at.line, [...(marks.get(at.line) || []), `${e.field ? `${e.field}: ` : ''}${e.message}`]);
      const jump = at ? h('button', { type: 'button', class: 'link', onclick: () => ed.goTo(at.line) }, `line ${at.line}`) : null;
      return h('li', { dataset: { field: e.field || '', line: at ? String(at.line) : '' } },
        jump, jump ? ' ' : '', h('code', {}, e.field || 'recipe'), ': ', e.message,
        at && !at.exact ? h('span', { class: 'muted' }, ' (the field is not written; its parent is marked)') : null);
    }));
    ed.mark(marks);
    if (list.length) ed.textarea.setAttribute('aria-invalid', 'true');
  }

  async function onSubmit(ev) {
    ev.preventDefault();
    clear(banner);
    showErrors([]);
    let body;
    try {
      body = parseYaml(ed.value);
    } catch (err) {
      showErrors([{ field: '', message: `YAML: ${err.reason || err.message}`, line: (err.mark?.line ?? 0) + 1 }]);
      return;
    }
    if (!body || typeof body !== 'object' || Array.isArray(body)) {
      showErrors([{ field: '', message: 'the recipe must be a mapping (teacher, task, data, stages...)', line: 1 }]);
      return;
    }
    submit.disabled = true;
    try {
      const job = await call('/v1/jobs', { method: 'POST', body, headers: { 'Idempotency-Key': randomKey() } });
      sessionStorage.removeItem(DRAFT);
      location.hash = `#/jobs/${job.id}`;
    } catch (err) {
      if (err instanceof ApiError && err.status === 422 && err.problem.errors?.length) showErrors(err.problem.errors);
      else clear(banner, h('div', { class: 'banner banner-error', role: 'alert' }, err.message));
    } finally {
      submit.disabled = false;
    }
  }

  function idButton(id, what) {
    return h('button', { type: 'button', class: 'btn btn-small', 'aria-label': `Insert ${what} ${id} at the cursor`,
      onclick: () => ed.insert(id) }, 'Insert');
  }

  async function loadAssets() {
    try {
      [modelRows, dataRows] = await Promise.all([listAll('/v1/models'), listAll('/v1/datasets')]);
    } catch (err) {
      clear(models, h('p', { class: 'field-error' }, err.message));
      return;
    }
    if (!alive) return;
    clear(models, modelRows.length ? h('ul', { class: 'assets' }, modelRows.map((m) => h('li', {},
      h('div', {}, h('strong', {}, m.name), h('div', { class: 'mono small' }, m.id),
        h('div', { class: 'muted small' }, `${m.source?.source || ''} ${m.size_bytes ? fmtBytes(m.size_bytes) : ''}`)),
      idButton(m.id, 'model'))))
      : h('p', { class: 'muted' }, 'No models yet: register one with POST /v1/models.'));
    clear(datasets, dataRows.length ? h('ul', { class: 'assets' }, dataRows.map((d) => h('li', {},
      h('div', {}, h('strong', {}, d.name), h('div', { class: 'mono small' }, d.id),
        h('div', { class: 'muted small' }, `${d.kind} · ${d.rows} rows · ${fmtBytes(d.size_bytes)}`)),
      idButton(d.id, 'dataset'))))
      : h('p', { class: 'muted' }, 'No datasets yet: upload one with POST /v1/datasets.'));
    clear(modelSel, modelRows.map((m) => h('option', { value: m.id }, `${m.name} (${m.id})`)));
    clear(trainSel, h('option', { value: '' }, 'none'), dataRows.map((d) => h('option', { value: d.id }, `${d.name} (${d.id})`)));
    if (dataRows.length) trainSel.value = dataRows[0].id;
    evalBox.replaceChildren(evalBox.firstElementChild, ...dataRows.map((d, i) => h('label', { class: 'check' },
      h('input', { type: 'checkbox', value: d.id, checked: i === dataRows.length - 1 || dataRows.length === 1 }),
      ` ${d.name} `, h('span', { class: 'muted small' }, `(${d.kind})`))));
    // an untouched starting recipe is filled with the user's own ids
    if (ed.value === template(null, null, []) && modelRows.length) useTemplate();
  }

  function useTemplate() {
    const model = modelRows.find((m) => m.id === modelSel.value) || null;
    const train = dataRows.find((d) => d.id === trainSel.value) || null;
    const evals = [...evalBox.querySelectorAll('input:checked')].map((c) => dataRows.find((d) => d.id === c.value));
    ed.value = template(model, train, evals);
    sessionStorage.setItem(DRAFT, ed.value);
  }

  root.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'New job')),
    banner,
    h('div', { class: 'submit-grid' },
      h('form', { class: 'card', id: 'job-form', onsubmit: onSubmit, novalidate: true },
        h('label', { for: 'recipe', class: 'label' }, 'Recipe (YAML or JSON)'),
        h('p', { id: 'recipe-help', class: 'hint' }, 'The engine\'s recipe, with registered ids: ',
          h('code', {}, 'teacher: {model: mdl_…}'), ' and dataset ids in ', h('code', {}, 'data'),
          '. Errors are marked on the line of the field they name.'),
        ed.root, errors,
        h('div', { class: 'form-actions' }, submit)),
      h('aside', { class: 'side' },
        h('section', { class: 'card', 'aria-labelledby': 'tpl-h' }, h('h2', { id: 'tpl-h' }, 'Start from a template'),
          h('label', { for: 'tpl-model', class: 'label' }, 'Teacher model'), modelSel,
          h('label', { for: 'tpl-train', class: 'label' }, 'Transfer (train) dataset'), trainSel,
          evalBox,
          h('button', { type: 'button', class: 'btn', id: 'use-template', onclick: useTemplate }, 'Replace the recipe with this template')),
        h('section', { class: 'card', 'aria-labelledby': 'models-h' }, h('h2', { id: 'models-h' }, 'Your models'), models),
        h('section', { class: 'card', 'aria-labelledby': 'ds-h' }, h('h2', { id: 'ds-h' }, 'Your datasets'), datasets))));
  loadAssets();
  return () => { alive = false; };
}
