// The public API, called the way any client would: the key as a Bearer token, problem+json errors,
// and Server-Sent Events read with fetch() (EventSource cannot send an Authorization header).

const KEY = 'distillery.apiKey';

export const auth = {
  get: () => sessionStorage.getItem(KEY),
  set: (key) => sessionStorage.setItem(KEY, key),
  clear: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

// Listeners told when a call comes back 401 (a key revoked while signed in): the app signs out.
export const onUnauthorized = new Set();

async function problemOf(res) {
  const type = res.headers.get('content-type') || '';
  if (type.includes('json')) {
    try { return await res.json(); } catch { /* fall through */ }
  }
  return { title: res.statusText, detail: `${res.status} ${res.statusText}`, status: res.status };
}

export async function call(path, { method = 'GET', body, headers = {}, key = auth.get(), raw = false,
  signal } = {}) {
  const init = { method, headers: { Accept: 'application/json', ...headers }, signal };
  if (key) init.headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (!res.ok) {
    const problem = await problemOf(res);
    if (res.status === 401 && key === auth.get()) onUnauthorized.forEach((fn) => fn(problem));
    throw new ApiError(res.status, problem);
  }
  if (raw) return res;
  return res.status === 204 ? null : res.json();
}

// Every item of a cursor-paged list (models, datasets, artifacts), up to `max`.
export async function listAll(path, max = 1000) {
  const out = [];
  let after = null;
  while (out.length < max) {
    const sep = path.includes('?') ? '&' : '?';
    const page = await call(`${path}${sep}limit=200${after ? `&after=${encodeURIComponent(after)}` : ''}`);
    out.push(...page.data);
    if (!page.has_more || !page.next_cursor) break;
    after = page.next_cursor;
  }
  return out;
}

// Parse an SSE byte stream into {id, event, data} messages (the WHATWG algorithm, minus EventSource).
export async function* sseMessages(body, signal) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let msg = { data: [] };
  try {
    while (!signal?.aborted) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let nl;
      while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + (buffer.startsWith('\r\n', nl) ? 2 : 1));
        if (line === '') {
          if (msg.data.length || msg.event) yield { id: msg.id, event: msg.event || 'message', data: msg.data.join('\n') };
          msg = { data: [] };
          continue;
        }
        if (line.startsWith(':')) continue; // a comment: the keep-alive
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? '' : line.slice(colon + 1);
        if (val.startsWith(' ')) val = val.slice(1);
        if (field === 'data') msg.data.push(val);
        else if (field === 'event') msg.event = val;
        else if (field === 'id') msg.id = val;
        else if (field === 'retry' && /^\d+$/.test(val)) msg.retry = Number(val);
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/**
 * Follow an SSE endpoint with the API key, reconnecting with Last-Event-ID after a dropped connection.
 * Returns {close()}. `onEvent(name, data, id)` for each message; `onEnd(data)` when the server sends
 * `event: end` (the stream is then finished: no reconnect); `onState('live'|'reconnecting'|'closed')`.
 */
export function follow(path, { onEvent, onEnd, onState = () => {}, after = null } = {}) {
  const controller = new AbortController();
  let lastId = after;
  let delay = 1000;
  let closed = false;

  async function loop() {
    while (!closed) {
      try {
        const headers = { Accept: 'text/event-stream', Authorization: `Bearer ${auth.get()}` };
        if (lastId !== null && lastId !== undefined) headers['Last-Event-ID'] = String(lastId);
        const res = await fetch(path, { headers, signal: controller.signal, cache: 'no-store' });
        if (!res.ok) {
          const problem = await problemOf(res);
          if (res.status === 401) onUnauthorized.forEach((fn) => fn(problem));
          if (res.status >= 400 && res.status < 500) { onState('closed', problem); return; }
          throw new ApiError(res.status, problem);
        }
        onState('live');
        delay = 1000;
        for await (const m of sseMessages(res.body, controller.signal)) {
          if (m.id !== undefined && m.id !== '') lastId = m.id;
          let data = m.data;
          try { data = JSON.parse(m.data); } catch { /* keep the text */ }
          if (m.event === 'end') { closed = true; onEnd?.(data); onState('closed'); return; }
          onEvent?.(m.event, data, m.id);
        }
      } catch (err) {
        if (closed || controller.signal.aborted) return;
      }
      if (closed) return;
      onState('reconnecting');
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 15000);
    }
  }
  loop();
  return {
    close() { closed = true; controller.abort(); },
    get lastId() { return lastId; },
  };
}
