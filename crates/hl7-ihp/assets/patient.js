// The patient view (/patients/{key}): the latest values, each linked to its source
// message, trend plots over 15 min, 1 h or 24 h from the trends endpoint (NIBP as points),
// and the recent records. Refreshed when this patient's messages arrive.

import { api, patientPath, query } from "./api.js";
import { h, setText } from "./dom.js";
import { createTile, updateTile, tickTile } from "./tile.js";
import { VITALS, VITAL_BY_NAME, NIBP, unitLabel, preciseTime, parseTime, alertWords, stateWord } from "./format.js";
import { trendChart, parseRange } from "./plot.js";
import { alarmRows } from "./alarm.js";

const RANGES = {
  "15m": { label: "15 min", ms: 15 * 60_000, bucket: "10s", bucketMs: 10_000 },
  "1h": { label: "1 h", ms: 3_600_000, bucket: "30s", bucketMs: 30_000 },
  "24h": { label: "24 h", ms: 86_400_000, bucket: "5m", bucketMs: 300_000 },
};

const ORDER = VITALS.map((v) => v.vital);

/** Mounts the patient view of `ctx.params[0]`. */
export function mount(main, ctx) {
  const { live, navigate } = ctx;
  const key = ctx.params[0];
  let range = RANGES[ctx.search.get("range")] ? ctx.search.get("range") : "1h";
  const abort = new AbortController();
  const signal = abort.signal;
  let patient = live.patients.get(key) || null;
  let tile = null;

  const headSlot = h("div", { class: "patient-head" });
  const buttons = Object.entries(RANGES).map(([id, r]) =>
    h("button", { type: "button", class: id === range ? "active" : null, data: { range: id }, text: r.label, on: { click: () => choose(id) } }));
  const hint = h("span", { class: "hint" });
  const trends = h("div", { class: "trends", id: "trends" });
  const records = h("tbody");
  const more = h("button", { type: "button", class: "more", text: "Older records", hidden: true });
  const status = h("p", { class: "empty", hidden: true });
  const alarmBody = h("tbody");
  const alarmSection = h("section", { class: "section alarms", hidden: true },
    h("div", { class: "section-head" }, h("h2", { text: "Alarms" }), h("span", { class: "hint", text: "the most recent, newest first (ORU^R40)" })),
    h("table", { class: "list alarm-list" },
      h("thead", {}, h("tr", {}, ["Since", "Alarm", "Type", "Priority", "State", "Measurement", "Source", "Message"].map((t) => h("th", { text: t })))),
      alarmBody));
  main.replaceChildren(
    h("div", { class: "toolbar" }, h("a", { href: "/", text: "← Ward" }), h("h1", { text: "Patient" })),
    h("p", { class: "link-banner", role: "alert", text: "No connection to the receiver: the values shown are not being updated." }),
    status,
    headSlot,
    alarmSection,
    h("div", { class: "ranges", role: "group", "aria-label": "Time range" }, h("strong", { text: "Trends" }), buttons, hint),
    trends,
    h("section", { class: "section" },
      h("div", { class: "section-head" }, h("h2", { text: "Recent records" }), h("span", { class: "hint", text: "newest first; a row opens its message" })),
      h("table", { class: "list records" },
        h("thead", {}, h("tr", {}, ["Received", "Observed (device)", "Observation", "Value", "Units", "Range", "Flags", "Status", "Alert", "Message"].map((t) => h("th", { text: t })))),
        records),
      more),
  );

  function choose(id) {
    range = id;
    for (const b of buttons) b.classList.toggle("active", b.dataset.range === id);
    const params = new URLSearchParams(location.search);
    params.set("range", id);
    history.replaceState(null, "", `${location.pathname}?${params}`);
    loadTrends();
  }

  function show(p) {
    patient = p;
    if (!tile) {
      tile = createTile(p, { link: false, sources: true });
      headSlot.replaceChildren(tile.root);
    }
    updateTile(tile, p, live.thresholds);
    alarmBody.replaceChildren(...alarmRows(p.alarms));
    alarmSection.hidden = !(p.alarms && p.alarms.length);
    document.title = `${p.name || p.key} · hl7-ihp`;
  }

  async function loadPatient() {
    try {
      const p = await api(patientPath(key), { signal });
      if (!patient || p.last_message_id >= patient.last_message_id) show(p);
      status.hidden = true;
      return true;
    } catch (error) {
      if (signal.aborted) return false;
      status.hidden = false;
      setText(status, error.status === 404 ? "No patient with this key." : `Could not read the patient: ${error.message}`);
      return false;
    }
  }

  let trendsBusy = false;
  async function loadTrends() {
    if (trendsBusy) return;
    trendsBusy = true;
    const r = RANGES[range];
    const until = Date.now();
    const since = until - r.ms;
    try {
      const body = await api(patientPath(key, `/trends${query({ since: new Date(since).toISOString(), until: new Date(until).toISOString(), bucket: r.bucket })}`), { signal });
      drawTrends(body, r);
      setText(hint, `median of each ${r.bucket} with its min–max band; green: the normal range; local time`);
    } catch (error) {
      if (!signal.aborted) trends.replaceChildren(h("p", { class: "empty", text: `Could not read the trends: ${error.message}` }));
    } finally {
      trendsBusy = false;
    }
  }

  function normalOf(code) {
    const value = (patient && patient.latest || []).find((v) => v.code === code);
    return value ? parseRange(value.reference_range) : null;
  }

  function drawTrends(body, r) {
    const since = parseTime(body.since);
    const until = parseTime(body.until);
    const bucketMs = (body.bucket_seconds || r.bucketMs / 1000) * 1000;
    const series = body.series || [];
    const charts = [];
    const nibp = series.filter((se) => NIBP.includes(se.vital));
    const rank = (se) => (se.vital ? ORDER.indexOf(se.vital) : 100);
    const single = series.filter((se) => !NIBP.includes(se.vital)).sort((a, b) => rank(a) - rank(b));
    for (const se of single) {
      const meta = se.vital ? VITAL_BY_NAME[se.vital] : null;
      const title = meta ? meta.title : se.code_text || se.code;
      charts.push(chart(title, unitLabel(se.units) || (meta && meta.unit), se, [{ ...se, cls: "" }], { since, until, bucketMs, normal: normalOf(se.code), decimals: meta ? meta.decimals : 1 }));
    }
    if (nibp.length > 0) {
      const cls = { nibp_sys: "sys", nibp_dia: "dia", nibp_mean: "mean" };
      const legend = h("span", { class: "legend" }, nibp.map((se) => h("span", { class: cls[se.vital], text: ` ● ${VITAL_BY_NAME[se.vital].label}` })));
      const place = Math.min(...nibp.map(rank));
      charts.splice(charts.filter((c) => c.rank < place).length, 0,
        chart("NIBP", "mmHg", null, nibp.map((se) => ({ ...se, cls: cls[se.vital] })), { since, until, bucketMs, points: true }, legend, place));
    }
    if (charts.length === 0) {
      trends.replaceChildren(h("p", { class: "empty", text: "No numeric values in this time range." }));
      return;
    }
    trends.replaceChildren(...charts.map((c) => c.node));

    function chart(title, unit, se, lines, options, legend = null, place = null) {
      const n = lines.reduce((sum, l) => sum + l.buckets.filter((b) => b.count > 0).length, 0);
      const body = n > 0 ? trendChart({ series: lines, ...options }) : h("p", { class: "nodata", text: "no values in this range" });
      const node = h("div", { class: "chart", data: { code: se ? se.code : "nibp" } },
        h("h3", {}, title, h("span", { class: "unit", text: unit || "" }), legend), body);
      return { node, rank: place ?? (se && se.vital ? ORDER.indexOf(se.vital) : 100) };
    }
  }

  let cursor = null;
  let recordsBusy = false;
  async function loadRecords(older = false) {
    if (recordsBusy) return;
    recordsBusy = true;
    try {
      const body = await api(patientPath(key, `/observations${query({ limit: 100, cursor: older ? cursor : null })}`), { signal });
      const rows = body.records.map(recordRow);
      if (older) records.append(...rows);
      else records.replaceChildren(...rows);
      if (!older || body.next_cursor) cursor = body.next_cursor || null;
      more.hidden = !cursor;
    } catch (error) {
      if (!signal.aborted) records.replaceChildren(h("tr", {}, h("td", { colspan: 10, class: "error-text", text: `Could not read the records: ${error.message}` })));
    } finally {
      recordsBusy = false;
    }
  }
  more.addEventListener("click", () => loadRecords(true));

  function recordRow(r) {
    const meta = r.vital ? VITAL_BY_NAME[r.vital] : null;
    const href = `/messages/${r.message_id}?obx=${r.index}`;
    const value = r.state === "ok"
      ? h("td", { class: "num", text: r.value })
      : h("td", {}, h("span", { class: `badge ${r.state}`, text: stateWord(r) }), r.value && r.value.toUpperCase() !== "NAV" ? ` ${r.value}` : "");
    const alert = r.alert ? h("span", { class: `badge ${r.alert.level}`, text: alertWords(r.alert, r.abnormal_flags) }) : "";
    const row = h("tr", { class: "row", title: `${r.code_text || r.code} (${r.code_system || "?"}), OBX-4 ${r.sub_id || "-"}, ${r.device || ""}` },
      h("td", { text: preciseTime(parseTime(r.received_at)) }),
      h("td", { class: "mono", text: r.observed_at || "" }),
      h("td", {}, meta ? h("strong", { text: `${meta.label} ` }) : "", h("span", { class: "mono", text: r.code_text || r.code })),
      value,
      h("td", { text: unitLabel(r.units, r.units_text) }),
      h("td", { class: "mono", text: r.reference_range || "" }),
      h("td", { class: "mono", text: r.abnormal_flags || "" }),
      h("td", { class: "mono", text: r.result_status || "" }),
      h("td", {}, alert),
      h("td", {}, h("a", { href, text: `#${r.message_id}` })));
    row.addEventListener("click", (event) => {
      if (!event.target.closest("a")) navigate(href);
    });
    return row;
  }

  // Refreshes after this patient's messages, at most every few seconds.
  const timers = {};
  function soon(name, fn, ms) {
    if (timers[name]) return;
    timers[name] = setTimeout(() => {
      timers[name] = null;
      fn();
    }, ms);
  }

  const unsubscribe = live.subscribe(({ event, data }) => {
    if (event === "patient" && data && data.key === key) {
      if (!patient || data.last_message_id >= patient.last_message_id) show(data);
      soon("trends", loadTrends, 5000);
      soon("records", () => loadRecords(false), 2000);
    } else if (event === "status" && data && data.patient === key && tile) {
      tickTile(tile);
    } else if (event === "reset" || (event === "link" && data.state === "live")) {
      loadPatient();
      soon("trends", loadTrends, 500);
      soon("records", () => loadRecords(false), 500);
    } else if (event === "list" && live.patients.get(key)) {
      const p = live.patients.get(key);
      if (!patient || p.last_message_id >= patient.last_message_id) show(p);
    }
  });

  if (patient) show(patient);
  loadPatient().then((found) => found && Promise.all([loadTrends(), loadRecords(false)]));

  return {
    tick() {
      if (tile) tickTile(tile);
    },
    unmount() {
      abort.abort();
      unsubscribe();
      for (const t of Object.values(timers)) if (t) clearTimeout(t);
      document.title = "hl7-ihp ward";
    },
  };
}
