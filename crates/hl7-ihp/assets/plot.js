// Plots in SVG: the tiles' sparklines and the patient view's trend charts (median line in
// a min–max band, or blood pressure as points), with local-time axes.

import { s } from "./dom.js";
import { hourMinute } from "./format.js";

/** `50-120` (OBX-7) as `[50, 120]`, or null. */
export function parseRange(text) {
  const match = /^\s*(-?\d+(?:\.\d+)?)\s*[-–]\s*(-?\d+(?:\.\d+)?)\s*$/.exec(text || "");
  return match ? [Number(match[1]), Number(match[2])] : null;
}

// A coordinate with one decimal, without toFixed (thousands of points a second).
const r1 = (v) => Math.round(v * 10) / 10;

/**
 * Draws sparklines into `svg` (viewBox 100 × 30, stretched): each of `lines` is
 * `{times, values, cls}`; `normal` shades the normal range. The SVG's children are made
 * once and then only their attributes change.
 */
export function drawSparkline(svg, lines, normal) {
  let lo = Infinity;
  let hi = -Infinity;
  let t0 = Infinity;
  let t1 = -Infinity;
  for (const line of lines) {
    for (let i = 0; i < line.values.length; i++) {
      const v = line.values[i];
      if (!Number.isFinite(v)) continue;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
      const t = line.times[i];
      if (t < t0) t0 = t;
      if (t > t1) t1 = t;
    }
  }
  if (!(lo <= hi)) {
    svg.replaceChildren();
    return;
  }
  if (normal) {
    lo = Math.min(lo, normal[0]);
    hi = Math.max(hi, normal[1]);
  }
  const pad = (hi - lo) * 0.08 || 1;
  lo -= pad;
  hi += pad;
  const x = (t) => (t1 > t0 ? ((t - t0) / (t1 - t0)) * 98 + 1 : 50);
  const y = (v) => 29 - ((v - lo) / (hi - lo)) * 28;
  const wanted = (normal ? 1 : 0) + lines.length;
  if (svg.childElementCount !== wanted) {
    const children = [];
    if (normal) children.push(s("rect", { class: "normal", x: 0, width: 100 }));
    for (const line of lines) children.push(s("polyline", { class: line.cls || "line", "vector-effect": "non-scaling-stroke" }));
    svg.replaceChildren(...children);
  }
  let child = svg.firstElementChild;
  if (normal) {
    child.setAttribute("y", r1(y(normal[1])));
    child.setAttribute("height", r1(Math.max(0, y(normal[0]) - y(normal[1]))));
    child = child.nextElementSibling;
  }
  for (const line of lines) {
    let points = "";
    let n = 0;
    for (let i = 0; i < line.values.length; i++) {
      const v = line.values[i];
      if (!Number.isFinite(v)) continue;
      points += `${n++ ? " " : ""}${r1(x(line.times[i]))},${r1(y(v))}`;
    }
    if (n === 1) points += ` ${points}`;
    child.setAttribute("points", points);
    child = child.nextElementSibling;
  }
}

/** Ticks at round numbers: about `n` of them between lo and hi. */
export function niceTicks(lo, hi, n) {
  const span = hi - lo;
  if (!(span > 0)) return [lo];
  const raw = span / n;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((m) => m >= raw) || raw;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(Number(v.toFixed(10)));
  return ticks;
}

const TIME_STEPS = [10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600].map((s) => s * 1000);

function timeTicks(t0, t1, n) {
  const step = TIME_STEPS.find((st) => (t1 - t0) / st <= n) || 43_200_000;
  // Local round times: align on the local offset.
  const offset = new Date(t0).getTimezoneOffset() * 60_000;
  const ticks = [];
  for (let t = Math.ceil((t0 - offset) / step) * step + offset; t <= t1; t += step) ticks.push(t);
  return ticks;
}

const MAX_JOIN_MS = 120_000;
const W = 640;
const H = 220;
const M = { left: 46, right: 12, top: 12, bottom: 24 };

/**
 * A trend chart. `series` are `{buckets: [{start, count, min, median, max}], cls}` as the
 * trends endpoint gives them; `points` draws medians as points (blood pressure), else a
 * median line in its min–max band. Returns the SVG, with `data-points` the number of
 * buckets drawn.
 */
export function trendChart({ series, since, until, bucketMs, points = false, normal = null, decimals = 0 }) {
  const svg = s("svg", { class: "trend", viewBox: `0 0 ${W} ${H}`, role: "img" });
  const values = series.flatMap((se) => se.buckets.flatMap((b) => [b.min, b.max])).filter(Number.isFinite);
  let n = 0;
  let lo = values.length ? Math.min(...values) : 0;
  let hi = values.length ? Math.max(...values) : 1;
  if (normal) {
    lo = Math.min(lo, normal[0]);
    hi = Math.max(hi, normal[1]);
  }
  const pad = (hi - lo) * 0.1 || Math.max(1, Math.abs(hi) * 0.05);
  lo -= pad;
  hi += pad;
  const x = (t) => M.left + ((t - since) / (until - since)) * (W - M.left - M.right);
  const y = (v) => H - M.bottom - ((v - lo) / (hi - lo)) * (H - M.top - M.bottom);
  const grid = s("g", { class: "grid" });
  for (const v of niceTicks(lo, hi, 4)) {
    grid.append(s("line", { x1: M.left, x2: W - M.right, y1: y(v), y2: y(v) }));
    grid.append(s("text", { class: "ylabel", x: M.left - 6, y: y(v) + 4, "text-anchor": "end", text: v.toFixed(decimals && hi - lo < 10 ? 1 : 0) }));
  }
  for (const t of timeTicks(since, until, 6)) {
    grid.append(s("line", { class: "vgrid", x1: x(t), x2: x(t), y1: M.top, y2: H - M.bottom }));
    grid.append(s("text", { class: "xlabel", x: x(t), y: H - 6, "text-anchor": "middle", text: hourMinute(t) }));
  }
  if (normal) {
    svg.append(s("rect", { class: "normal", x: M.left, width: W - M.left - M.right, y: y(normal[1]), height: Math.max(0, y(normal[0]) - y(normal[1])) }));
  }
  svg.append(grid);
  for (const se of series) {
    const buckets = se.buckets
      .map((b) => ({ ...b, t: Date.parse(b.start) + bucketMs / 2 }))
      .filter((b) => b.count > 0 && Number.isFinite(b.median));
    const group = s("g", { class: `series ${se.cls || ""}` });
    if (points) {
      for (const b of buckets) {
        group.append(s("circle", { cx: x(b.t).toFixed(1), cy: y(b.median).toFixed(1), r: 3.2 }));
        n++;
      }
    } else {
      // Segments break where values are missing for longer than a monitor's usual pause
      // (two minutes, or a bucket and a half), so a gap is not drawn as a trend.
      const gap = Math.max(bucketMs * 1.5, MAX_JOIN_MS);
      let run = [];
      const runs = [run];
      let previous = null;
      for (const b of buckets) {
        if (previous !== null && b.t - previous > gap) runs.push((run = []));
        run.push(b);
        previous = b.t;
      }
      for (const r of runs.filter((r) => r.length > 0)) {
        const top = r.map((b) => `${x(b.t).toFixed(1)},${y(b.max).toFixed(1)}`);
        const bottom = r.map((b) => `${x(b.t).toFixed(1)},${y(b.min).toFixed(1)}`).reverse();
        if (r.length === 1) {
          group.append(s("line", { class: "band-line", x1: x(r[0].t), x2: x(r[0].t), y1: y(r[0].max), y2: y(r[0].min) }));
          group.append(s("circle", { cx: x(r[0].t).toFixed(1), cy: y(r[0].median).toFixed(1), r: 2.5 }));
        } else {
          group.append(s("polygon", { class: "band", points: [...top, ...bottom].join(" ") }));
          group.append(s("polyline", { class: "median", points: r.map((b) => `${x(b.t).toFixed(1)},${y(b.median).toFixed(1)}`).join(" ") }));
        }
        n += r.length;
      }
    }
    svg.append(group);
  }
  svg.setAttribute("data-points", String(n));
  return svg;
}
