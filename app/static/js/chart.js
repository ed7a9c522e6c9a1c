// One SVG scatter of cost (size or latency) against quality: the report's charts (single run, students, search).

import { fmtNum, h, s } from './dom.js';

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

function pointClass(p) {
  if (p.teacher) return 'pt pt-teacher';
  return `pt ${p.pass === false ? 'pt-fail' : 'pt-pass'}${p.best ? ' pt-best' : ''}`;
}

// points: {label, x, y, pass, teacher?, best?}; line: the points joined in order (default all, [] for none);
// gate: the retention line to draw, or null.
export function scatter({ id, title, xLabel, yLabel = 'quality retained', points, line = points, gate, xFormat }) {
  const W = 520; const H = 300; const m = { l: 56, r: 20, t: 16, b: 44 };
  const xs = points.map((p) => p.x); const ys = points.map((p) => p.y);
  if (gate !== null) ys.push(gate);
  const xt = ticks(0, Math.max(...xs));
  const yt = ticks(Math.min(...ys, 1), Math.max(...ys, 1));
  const X = (v) => m.l + ((v - xt[0]) / (xt[xt.length - 1] - xt[0])) * (W - m.l - m.r);
  const Y = (v) => H - m.b - ((v - yt[0]) / (yt[yt.length - 1] - yt[0])) * (H - m.t - m.b);
  return s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', id, role: 'img', 'aria-labelledby': `${id}-t` },
    s('title', { id: `${id}-t` }, title),
    ...yt.map((v) => s('g', { class: 'grid' }, s('line', { x1: m.l, x2: W - m.r, y1: Y(v), y2: Y(v) }),
      s('text', { x: m.l - 8, y: Y(v) + 4, 'text-anchor': 'end' }, fmtNum(v, 2)))),
    ...xt.map((v) => s('g', { class: 'grid' }, s('line', { x1: X(v), x2: X(v), y1: m.t, y2: H - m.b }),
      s('text', { x: X(v), y: H - m.b + 16, 'text-anchor': 'middle' }, xFormat(v)))),
    s('text', { class: 'axis-label', x: (W + m.l) / 2, y: H - 6, 'text-anchor': 'middle' }, xLabel),
    s('text', { class: 'axis-label', x: 14, y: (H - m.b + m.t) / 2, 'text-anchor': 'middle',
      transform: `rotate(-90 14 ${(H - m.b + m.t) / 2})` }, yLabel),
    gate !== null ? s('g', { class: 'gate' }, s('line', { x1: m.l, x2: W - m.r, y1: Y(gate), y2: Y(gate) }),
      s('text', { x: W - m.r - 4, y: Y(gate) - 5, 'text-anchor': 'end' }, `gate ${fmtNum(gate, 2)}`)) : null,
    line.length > 1 ? s('polyline', { class: 'path', points: line.map((p) => `${X(p.x)},${Y(p.y)}`).join(' '),
      'data-labels': line.map((p) => p.label).join(' ') }) : null,
    ...points.map((p) => s('g', { class: pointClass(p) },
      s('circle', { cx: X(p.x), cy: Y(p.y), r: p.best ? 8 : 6, 'data-label': p.label, 'data-x': p.x, 'data-y': p.y },
        s('title', {}, `${p.label}: ${xFormat(p.x)} ${xLabel.split(' ')[0].toLowerCase()}, ${yLabel} ${fmtNum(p.y)}`)),
      // labels near the right edge go to the point's left, so they stay inside the plot
      X(p.x) > W - 90 ? s('text', { x: X(p.x) - 9, y: Y(p.y) - 8, 'text-anchor': 'end' }, p.label)
        : s('text', { x: X(p.x) + 9, y: Y(p.y) - 8 }, p.label))));
}

// The two charts (size, latency) of the same points, each in its figure.
export function costCharts(points, { gate = null, yLabel = 'quality retained', prefix = 'chart', line = null }) {
  const size = points.filter((p) => p.size !== null && p.size !== undefined).map((p) => ({ ...p, x: p.size / 1e6 }));
  const lat = points.filter((p) => p.p50 !== null && p.p50 !== undefined).map((p) => ({ ...p, x: p.p50 }));
  const joined = (pts, key) => (line ? line[key].map((l) => pts.find((p) => p.label === l)).filter(Boolean) : pts);
  const fig = (id, pts, key, title, xLabel, xFormat, caption) => h('figure', {},
    pts.length ? scatter({ id, title, xLabel, yLabel, points: pts, line: joined(pts, key), gate, xFormat })
      : h('p', { class: 'muted' }, `No ${key === 'size' ? 'sizes' : 'latencies'}.`),
    h('figcaption', {}, caption));
  return [
    fig(`${prefix}-size`, size, 'size', 'Size on disk against quality', 'Size (MB)',
      (v) => fmtNum(v, v < 1 ? 3 : 1), `Size on disk (MB) against ${yLabel}`),
    fig(`${prefix}-latency`, lat, 'latency', 'Latency against quality', 'p50 latency (ms, batch 1)',
      (v) => fmtNum(v, v < 10 ? 2 : 0), `Batch-1 p50 latency (ms) against ${yLabel}`),
  ];
}
