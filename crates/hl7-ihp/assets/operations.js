// The operations view (/operations), for the integration engineer: message rate over
// time, rejected messages with their reasons, devices and their status, connections and
// the export's lag.

import { api, query } from "./api.js";
import { h, s, setText } from "./dom.js";
import { niceTicks } from "./plot.js";
import { syncClock, parseTime, preciseTime, localTime, hourMinute, age, location, STATUS_TEXT } from "./format.js";

const WINDOWS = {
  "1h": { label: "1 h", minutes: 60, bin: 1 },
  "24h": { label: "24 h", minutes: 1440, bin: 10 },
};

// A rejected message as the list and the `rejected` event give it.
function rejectedRow(m, navigate) {
  const href = `/messages/${m.message_id ?? m.id}`;
  const row = h("tr", { class: "row" },
    h("td", { text: preciseTime(parseTime(m.received_at)) }),
    h("td", {}, h("span", { class: `badge ${m.outcome}`, text: m.outcome })),
    h("td", { class: "wrap reason", text: m.reason || "" }),
    h("td", { class: "mono", text: m.sending_application || "" }),
    h("td", { class: "mono", text: m.message_type || "" }),
    h("td", {}, h("a", { href, text: `#${m.message_id ?? m.id}` })));
  row.addEventListener("click", (event) => {
    if (!event.target.closest("a")) navigate(href);
  });
  return row;
}

/** Draws per-minute counts as stacked bars (accepted, error, rejected). */
function rateChart(minutes, windowSpec, generatedAt) {
  const W = 1200;
  const H = 170;
  const M = { left: 52, right: 10, top: 10, bottom: 24 };
  const binMs = windowSpec.bin * 60_000;
  const end = Math.floor(generatedAt / 60_000) * 60_000 + 60_000;
  const start = end - windowSpec.minutes * 60_000;
  const bins = new Map();
  for (const m of minutes) {
    const t = parseTime(m.start);
    if (!(t >= start && t < end)) continue;
    const at = start + Math.floor((t - start) / binMs) * binMs;
    const bin = bins.get(at) || { accepted: 0, error: 0, rejected: 0 };
    bin.accepted += m.accepted;
    bin.error += m.error;
    bin.rejected += m.rejected;
    bins.set(at, bin);
  }
  // Per minute, so that the scale means the same in both windows.
  const perMinute = (n) => n / windowSpec.bin;
  const highest = Math.max(1, ...[...bins.values()].map((b) => perMinute(b.accepted + b.error + b.rejected)));
  const ticks = niceTicks(0, highest, 4);
  const most = Math.max(highest, ticks[ticks.length - 1]);
  const x = (t) => M.left + ((t - start) / (end - start)) * (W - M.left - M.right);
  const y = (v) => H - M.bottom - (v / most) * (H - M.top - M.bottom);
  const svg = s("svg", { class: "rate", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "messages per minute" });
  const grid = s("g", { class: "grid" });
  for (const v of ticks) {
    grid.append(s("line", { x1: M.left, x2: W - M.right, y1: y(v), y2: y(v) }));
    grid.append(s("text", { x: M.left - 6, y: y(v) + 4, "text-anchor": "end", text: Math.round(v).toLocaleString() }));
  }
  const step = windowSpec.minutes <= 60 ? 10 * 60_000 : 3 * 3_600_000;
  const offset = new Date(start).getTimezoneOffset() * 60_000;
  for (let t = Math.ceil((start - offset) / step) * step + offset; t <= end; t += step) {
    grid.append(s("text", { x: x(t), y: H - 6, "text-anchor": "middle", text: hourMinute(t) }));
  }
  svg.append(grid);
  const width = Math.max(1, x(start + binMs) - x(start) - 1);
  let n = 0;
  for (const [t, b] of bins) {
    let base = 0;
    for (const kind of ["accepted", "error", "rejected"]) {
      const v = perMinute(b[kind]);
      if (v <= 0) continue;
      svg.append(s("rect", { class: kind, x: x(t).toFixed(1), width: width.toFixed(1), y: y(base + v).toFixed(1), height: (y(base) - y(base + v)).toFixed(1) },
        s("title", { text: `${localTime(t)}: ${b[kind].toLocaleString()} ${kind}` })));
      base += v;
    }
    n++;
  }
  svg.setAttribute("data-bins", String(n));
  return svg;
}

function card(label, value, sub, level) {
  return h("div", { class: `card ${level || ""}` }, h("div", { class: "label", text: label }), h("div", { class: "big", text: value }), h("div", { class: "sub", text: sub || "" }));
}

/** Mounts the operations view. */
export function mount(main, ctx) {
  const { live, navigate } = ctx;
  const abort = new AbortController();
  const signal = abort.signal;
  let windowId = WINDOWS[ctx.search.get("window")] ? ctx.search.get("window") : "1h";
  let stats = null;
  let devices = [];

  const cards = h("div", { class: "cards", id: "ops-cards" });
  const chartSlot = h("div", { class: "chart" });
  const buttons = Object.entries(WINDOWS).map(([id, w]) => h("button", { type: "button", class: id === windowId ? "active" : null, data: { window: id }, text: w.label, on: { click: () => choose(id) } }));
  const rejected = h("tbody", { id: "rejected" });
  const deviceRows = h("tbody", { id: "devices" });
  const deviceHint = h("span", { class: "hint" });
  // The --connect links (client mode): shown only when there are some.
  const linkRows = h("tbody", { id: "links" });
  const linkSection = h("section", { class: "section", id: "links-section", hidden: true },
    h("div", { class: "section-head" }, h("h2", { text: "Device links" }), h("span", { class: "hint", text: "devices that serve, connected to with --connect" })),
    h("table", { class: "list" }, h("thead", {}, h("tr", {}, ["State", "Link", "Address", "Since", "Last message", "Messages", "Reconnects", "Last error"].map((t) => h("th", { text: t })))), linkRows));
  main.replaceChildren(
    h("div", { class: "toolbar" }, h("h1", { text: "Operations" })),
    h("p", { class: "link-banner", role: "alert", text: "No connection to the receiver: the figures shown are not being updated." }),
    cards,
    h("section", { class: "section" },
      h("div", { class: "section-head" }, h("h2", { text: "Messages per minute" }), buttons,
        h("span", { class: "rate-legend" }, h("span", { class: "accepted", text: "accepted" }), h("span", { class: "error", text: "error" }), h("span", { class: "rejected", text: "rejected" }))),
      chartSlot),
    h("section", { class: "section" },
      h("div", { class: "section-head" }, h("h2", { text: "Rejected and error messages" }), h("a", { href: "/messages?outcome=refused", text: "all in the message browser" })),
      h("table", { class: "list" }, h("thead", {}, h("tr", {}, ["Received", "Outcome", "Reason", "Sender (MSH-3)", "Type", "Message"].map((t) => h("th", { text: t })))), rejected)),
    h("section", { class: "section" },
      h("div", { class: "section-head" }, h("h2", { text: "Devices" }), deviceHint),
      h("table", { class: "list" }, h("thead", {}, h("tr", {}, ["Status", "Device", "Kind", "Sender (MSH-3)", "Patient", "Location", "Last message", "Messages"].map((t) => h("th", { text: t })))), deviceRows)),
    linkSection,
  );

  function choose(id) {
    windowId = id;
    for (const b of buttons) b.classList.toggle("active", b.dataset.window === id);
    history.replaceState(null, "", `/operations?window=${id}`);
    drawStats();
  }

  function drawStats() {
    if (!stats) return;
    const generated = parseTime(stats.generated_at);
    const sums = (minutes) => minutes.reduce((t, m) => ({ accepted: t.accepted + m.accepted, error: t.error + m.error, rejected: t.rejected + m.rejected }), { accepted: 0, error: 0, rejected: 0 });
    const lastHour = sums(stats.minutes.filter((m) => parseTime(m.start) >= generated - 3_600_000));
    const thisMinute = Math.floor(generated / 60_000) * 60_000;
    const none = { accepted: 0, error: 0, rejected: 0 };
    const recent = stats.minutes.find((m) => parseTime(m.start) === thisMinute - 60_000) || none;
    const current = stats.minutes.find((m) => parseTime(m.start) === thisMinute) || none;
    const exp = stats.export || {};
    const lagLevel = exp.lag_seconds > 300 ? "critical" : exp.lag_seconds > 30 ? "warning" : "";
    const counts = { live: 0, stale: 0, offline: 0 };
    for (const d of devices) counts[d.status] = (counts[d.status] || 0) + 1;
    cards.replaceChildren(
      card("Accepted, last full minute", recent.accepted.toLocaleString(), `${current.accepted.toLocaleString()} so far this minute, ${lastHour.accepted.toLocaleString()} in the last hour`),
      card("Refused, last hour", (lastHour.error + lastHour.rejected).toLocaleString(), `${lastHour.error} error, ${lastHour.rejected} rejected`, lastHour.rejected + lastHour.error > 0 ? "warning" : ""),
      card("MLLP connections open", String(stats.connections ? stats.connections.open : "?"), `${stats.connections ? stats.connections.total : "?"} since start`),
      card("Export lag", `${(exp.lag_seconds ?? 0).toFixed(1)} s`, `${(exp.lag_messages ?? 0).toLocaleString()} messages behind (${exp.watermark ?? "?"} of ${exp.newest ?? "?"})`, lagLevel),
      card("Devices", String(devices.length), `${counts.live} live, ${counts.stale} stale, ${counts.offline} offline`, counts.offline > 0 ? "warning" : ""),
    );
    chartSlot.replaceChildren(rateChart(stats.minutes, WINDOWS[windowId], generated));
  }

  async function loadStats() {
    try {
      stats = await api("/api/v1/stats", { signal });
      syncClock(stats.generated_at);
      drawStats();
    } catch (error) {
      if (!signal.aborted) cards.replaceChildren(h("p", { class: "error-text", text: `Could not read the statistics: ${error.message}` }));
    }
  }

  async function loadRejected() {
    try {
      const body = await api(`/api/v1/messages${query({ outcome: "refused", limit: 50 })}`, { signal });
      rejected.replaceChildren(...body.messages.map((m) => rejectedRow(m, navigate)));
      if (body.messages.length === 0) rejected.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "empty", text: "None: every message was accepted." })));
    } catch (error) {
      if (!signal.aborted) rejected.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "error-text", text: error.message })));
    }
  }

  const RANK = { offline: 0, stale: 1, live: 2 };
  async function loadDevices() {
    try {
      const body = await api("/api/v1/devices", { signal });
      devices = body.devices.sort((a, b) => (RANK[a.status] ?? 3) - (RANK[b.status] ?? 3) || String(a.id).localeCompare(String(b.id)));
      drawDevices();
      drawLinks(body.links || []);
      drawStats();
    } catch (error) {
      if (!signal.aborted) deviceRows.replaceChildren(h("tr", {}, h("td", { colspan: 8, class: "error-text", text: error.message })));
    }
  }

  let ages = [];
  function drawDevices() {
    setText(deviceHint, `${devices.length} known; OBX-18 equipment id, else the sending application`);
    ages = [];
    deviceRows.replaceChildren(...devices.map((d) => {
      const at = parseTime(d.last_message_at);
      const when = h("td", { title: preciseTime(at), text: `${localTime(at)} · ${age(at)}` });
      ages.push([when, at]);
      return h("tr", { data: { status: d.status } },
        h("td", {}, h("span", { class: `badge ${d.status}`, text: STATUS_TEXT[d.status] || d.status })),
        h("td", { class: "mono", text: d.id }),
        h("td", { text: d.kind }),
        h("td", { class: "mono", text: d.sending_application || "" }),
        h("td", {}, d.patient ? h("a", { href: `/patients/${encodeURIComponent(d.patient)}`, text: d.patient_name || d.patient }) : ""),
        h("td", { text: location(d.location) }),
        when,
        h("td", { class: "num", text: (d.n_messages ?? 0).toLocaleString() }));
    }));
  }

  const LINK_STATE = { connected: "live", connecting: "stale", retrying: "offline", stopped: "offline", standby: "stale" };
  function drawLinks(links) {
    linkSection.hidden = links.length === 0;
    linkRows.replaceChildren(...links.map((l) => {
      const since = parseTime(l.since);
      const last = l.last_message_at ? parseTime(l.last_message_at) : null;
      return h("tr", { data: { state: l.state } },
        h("td", {}, h("span", { class: `badge ${LINK_STATE[l.state] || "offline"}`, text: l.state })),
        h("td", { class: "mono", text: l.name }),
        h("td", { class: "mono", text: `${l.address}${l.transport === "tls" ? " (TLS)" : ""}` }),
        h("td", { title: preciseTime(since), text: `${localTime(since)} · ${age(since)}` }),
        h("td", { text: last ? `${localTime(last)} · ${age(last)}` : "none yet" }),
        h("td", { class: "num", text: (l.n_messages ?? 0).toLocaleString() }),
        h("td", { class: "num", text: (l.n_reconnects ?? 0).toLocaleString() }),
        h("td", { text: l.last_error || "" }));
    }));
  }

  // A refused message counts in the cards and the chart as soon as it is listed, not only
  // at the next read of the stats (which a pending later read may put off by seconds).
  function countRefused(message) {
    if (!stats) return;
    const kind = message.outcome === "error" ? "error" : "rejected";
    const at = Math.floor(parseTime(message.received_at) / 60_000) * 60_000;
    let minute = stats.minutes.find((m) => parseTime(m.start) === at);
    if (!minute) {
      minute = { start: new Date(at).toISOString(), accepted: 0, error: 0, rejected: 0, by_type: {} };
      stats.minutes.push(minute);
      stats.minutes.sort((a, b) => parseTime(a.start) - parseTime(b.start));
    }
    minute[kind] += 1;
    drawStats();
  }

  const timers = {};
  function soon(name, fn, ms) {
    if (timers[name]) return;
    timers[name] = setTimeout(() => {
      timers[name] = null;
      fn();
    }, ms);
  }

  const unsubscribe = live.subscribe(({ event, data }) => {
    if (event === "rejected" && data) {
      const empty = rejected.querySelector("td.empty");
      if (empty) rejected.replaceChildren();
      rejected.prepend(rejectedRow(data, navigate));
      while (rejected.children.length > 50) rejected.lastChild.remove();
      countRefused(data);
      soon("stats", loadStats, 2000);
    } else if (event === "patient") {
      soon("stats", loadStats, 5000);
    } else if (event === "status") {
      soon("devices", loadDevices, 1000);
    } else if (event === "reset" || (event === "link" && data.state === "live")) {
      loadStats();
      loadRejected();
      loadDevices();
    }
  });
  // The export's lag and the connection count change without events.
  const every = setInterval(() => {
    loadStats();
    if (!linkSection.hidden) loadDevices();
  }, 10_000);

  loadStats();
  loadRejected();
  loadDevices();

  return {
    tick() {
      for (const [cell, at] of ages) setText(cell, `${localTime(at)} · ${age(at)}`);
    },
    unmount() {
      abort.abort();
      unsubscribe();
      clearInterval(every);
      for (const t of Object.values(timers)) if (t) clearTimeout(t);
    },
  };
}
