// Where each key of a YAML document is written: a map from a dotted path ("stages.1.epochs") to its
// 1-based line, so an API error's field can be shown on the line that holds it. Handles block mappings and
// sequences, and flow collections ({...}, [...]) on one or several lines: the shapes recipes are written in.

export function locate(text) {
  const starts = [0];
  for (let i = 0; i < text.length; i++) if (text[i] === '\n') starts.push(i + 1);
  const lineAt = (off) => {
    let lo = 0; let hi = starts.length - 1;
    while (lo < hi) { const mid = (lo + hi + 1) >> 1; if (starts[mid] <= off) lo = mid; else hi = mid - 1; }
    return lo + 1;
  };
  const map = new Map();
  const put = (path, off) => { if (!map.has(path)) map.set(path, lineAt(off)); };
  const join = (base, key) => (base === '' ? String(key) : `${base}.${key}`);

  // ---- flow collections, parsed from an offset; returns the offset after the collection ----
  function skipWs(i) {
    while (i < text.length) {
      if (/\s/.test(text[i])) i++;
      else if (text[i] === '#' && (i === 0 || /\s/.test(text[i - 1]))) { while (i < text.length && text[i] !== '\n') i++; }
      else break;
    }
    return i;
  }
  function scalar(i, stops) {
    if (text[i] === '"' || text[i] === "'") {
      const q = text[i]; i++;
      while (i < text.length && text[i] !== q) i += text[i] === '\\' && q === '"' ? 2 : 1;
      return i + 1;
    }
    while (i < text.length && !stops.includes(text[i]) && text[i] !== '\n') {
      if (text[i] === ':' && /[\s,}\]]/.test(text[i + 1] || ' ') && stops.includes(':')) break;
      i++;
    }
    return i;
  }
  function unquote(raw) {
    const t = raw.trim();
    return /^(['"]).*\1$/.test(t) ? t.slice(1, -1) : t;
  }
  function flowValue(i, path) {
    i = skipWs(i);
    if (text[i] === '{') return flowMap(i + 1, path);
    if (text[i] === '[') return flowSeq(i + 1, path);
    return scalar(i, ',}]');
  }
  function flowMap(i, path) {
    while (i < text.length) {
      i = skipWs(i);
      if (text[i] === '}') return i + 1;
      if (text[i] === ',') { i++; continue; }
      const keyStart = i;
      i = scalar(i, ':,}');
      const key = unquote(text.slice(keyStart, i));
      put(join(path, key), keyStart);
      i = skipWs(i);
      if (text[i] === ':') i = flowValue(i + 1, join(path, key));
      else if (i === keyStart) i++; // unparseable: move on rather than loop
    }
    return i;
  }
  function flowSeq(i, path) {
    let index = 0;
    while (i < text.length) {
      i = skipWs(i);
      if (text[i] === ']') return i + 1;
      if (text[i] === ',') { i++; index++; continue; }
      put(join(path, index), i);
      const before = i;
      i = flowValue(i, join(path, index));
      if (i === before) i++;
    }
    return i;
  }

  // ---- block structure, line by line: a stack of open collections by indentation ----
  const stack = []; // {indent, type: 'map'|'seq', path, pending (last key's path), index}
  let resumeAt = 0; // offset up to which a multi-line flow collection has consumed the text

  function block(off, col) {
    const rest = text.slice(off, text.indexOf('\n', off) < 0 ? text.length : text.indexOf('\n', off));
    if (rest.startsWith('{') || rest.startsWith('[')) {
      const parent = stack.length ? stack[stack.length - 1].pending : '';
      resumeAt = flowValue(off, parent ?? '');
      return;
    }
    const item = /^-(\s|$)/.exec(rest);
    if (item) {
      while (stack.length && stack[stack.length - 1].indent > col) stack.pop();
      let top = stack[stack.length - 1];
      if (top && top.type === 'seq' && top.indent === col) top.index += 1;
      else {
        const parent = top ? (top.pending ?? top.path) : '';
        top = { indent: col, type: 'seq', path: parent, index: 0, pending: null };
        stack.push(top);
      }
      const path = join(top.path, top.index);
      top.pending = path;
      put(path, off);
      const inner = rest.slice(1).search(/\S/);
      const innerText = inner >= 0 ? rest.slice(1 + inner) : '';
      if (innerText.startsWith('{') || innerText.startsWith('[')) resumeAt = flowValue(off + 1 + inner, path);
      else if (inner >= 0) {
        const innerCol = col + 1 + inner;
        // a mapping that starts on the item's line belongs to the item, at the inner column
        stack.push({ indent: innerCol, type: 'map', path, pending: null, index: 0 });
        block(off + 1 + inner, innerCol);
      }
      return;
    }
    const m = /^("[^"]*"|'[^']*'|[^\s#'"{[\]},:][^:#]*?)\s*:(\s|$)/.exec(rest);
    if (!m) return; // a scalar continuation or something this map does not need
    while (stack.length && (stack[stack.length - 1].indent > col
      || (stack[stack.length - 1].indent === col && stack[stack.length - 1].type === 'seq'))) stack.pop();
    let top = stack[stack.length - 1];
    if (!(top && top.type === 'map' && top.indent === col)) {
      top = { indent: col, type: 'map', path: top ? (top.pending ?? top.path) : '', pending: null, index: 0 };
      stack.push(top);
    }
    const key = unquote(m[1]);
    const path = join(top.path, key);
    top.pending = path;
    put(path, off);
    const valueOff = off + m[0].length;
    const value = rest.slice(m[0].length);
    const first = value.search(/\S/);
    if (first >= 0 && (value[first] === '{' || value[first] === '[')) resumeAt = flowValue(valueOff + first, path);
  }

  for (let n = 0; n < starts.length; n++) {
    const off = starts[n];
    if (off < resumeAt) continue;
    const end = n + 1 < starts.length ? starts[n + 1] - 1 : text.length;
    const line = text.slice(off, end);
    const col = line.search(/\S/);
    if (col < 0 || line[col] === '#' || line.startsWith('---') || line.startsWith('...')) continue;
    block(off + col, col);
  }
  return map;
}

// The line for an API error's field: the deepest written prefix of its path ("stages.0.student.layers"
// falls back to "stages.0.student" when `layers` was left out), or null when none of it is written.
export function lineFor(map, field) {
  if (!field) return null;
  const parts = String(field).split('.');
  while (parts.length) {
    const line = map.get(parts.join('.'));
    if (line) return { line, exact: parts.length === String(field).split('.').length };
    parts.pop();
  }
  return null;
}
