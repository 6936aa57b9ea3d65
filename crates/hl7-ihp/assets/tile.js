// A patient's tile: who and where, the latest heart rate, SpO2, respiration rate, NIBP and
// temperature with units, ages, alerts with the limit crossed and sparklines, and the
// monitor's status. Built once, then updated in place as events arrive.

import { h, s, setText, setAttr, toggle } from "./dom.js";
import { VITAL_BY_NAME, NIBP, alertWords, stateWord, unitLabel, number, valueTime, shortAge, age, localDateTime, location, parseTime, now, sexLetter, ageYears } from "./format.js";
import { drawSparkline, parseRange } from "./plot.js";
import { createAlarmBanner } from "./alarm.js";

/** The cells of a tile: one vital each, or the three NIBP values in one. */
const CELLS = [
  { id: "hr", vitals: ["heart_rate"] },
  { id: "spo2", vitals: ["spo2"] },
  { id: "rr", vitals: ["resp_rate"] },
  { id: "nibp", vitals: NIBP, label: "NIBP", unit: "mmHg" },
  { id: "temp", vitals: ["temperature"] },
];

// Preferred codes where one vital comes in several (ECG heart rate before pulse rate).
const PREFERRED = ["147842", "150344", "150364"];

/** The value to show for `vital` among a patient's latest: ok before missing, newest first. */
export function pick(latest, vital) {
  let best = null;
  for (const value of latest || []) {
    if (value.vital !== vital) continue;
    if (best === null || better(value, best)) best = value;
  }
  return best;
}

function better(a, b) {
  const ta = valueTime(a);
  const tb = valueTime(b);
  if (Math.abs(ta - tb) > 1000) return ta > tb;
  if ((a.state === "ok") !== (b.state === "ok")) return a.state === "ok";
  return PREFERRED.indexOf(a.code) > PREFERRED.indexOf(b.code);
}

/** The status to show: the server's, or later when our own clock says so (no event yet). */
export function effectiveStatus(patient, thresholds) {
  const silentMs = now() - parseTime(patient.last_message_at);
  let status = patient.status || "live";
  if (thresholds && Number.isFinite(silentMs)) {
    if (silentMs > thresholds.offline_after_seconds * 1000) status = "offline";
    else if (silentMs > thresholds.stale_after_seconds * 1000 && status === "live") status = "stale";
  }
  return status;
}

function cellLabel(cell, value) {
  if (cell.label) return cell.label;
  if (value && value.code === "149530") return "PR";
  return VITAL_BY_NAME[cell.vitals[0]].label;
}

/**
 * Creates a tile. `link` makes it an anchor to the patient view; `sources` links each
 * value to the message it came from.
 */
export function createTile(patient, { link = true, sources = false, thresholds = null, visible = true } = {}) {
  const parts = {};
  const head = h("div", { class: "tile-head" },
    h("div", { class: "who" },
      (parts.name = h("span", { class: "name" })),
      (parts.pid = h("span", { class: "pid" }))),
    (parts.where = h("div", { class: "where" })),
  );
  parts.banner = h("div", { class: "banner", role: "status" },
    (parts.bannerWord = h("strong")), " ", (parts.bannerText = h("span")));
  parts.alarm = createAlarmBanner();
  const cells = CELLS.map((cell) => {
    const c = { cell };
    c.label = h("span", { class: "v-label" });
    c.unit = h("span", { class: "v-unit" });
    c.age = h("span", { class: "v-age" });
    c.value = h("span", { class: "v-value" });
    c.extra = h("span", { class: "v-extra" });
    c.alert = h("span", { class: "v-alert" });
    c.spark = s("svg", { class: "spark", viewBox: "0 0 100 30", preserveAspectRatio: "none", "aria-hidden": "true" });
    c.source = sources ? h("a", { class: "v-source", text: "message" }) : null;
    c.root = h("div", { class: `v v-${cell.id}`, data: { cell: cell.id } },
      h("div", { class: "v-top" }, c.label, c.unit, c.age),
      h("div", { class: "v-main" }, c.value, c.extra),
      h("div", { class: "v-bottom" }, c.alert, c.source),
      c.spark);
    return c;
  });
  parts.foot = h("div", { class: "tile-foot" });
  const body = [head, parts.alarm.root, parts.banner, h("div", { class: "vitals" }, cells.map((c) => c.root)), parts.foot];
  // An unassigned device has no patient view (no records under a patient): not a link.
  const root = link && patient.unassigned !== true
    ? h("a", { class: "tile", data: { key: patient.key } }, body)
    : h("div", { class: link ? "tile" : "tile big", data: { key: patient.key } }, body);
  const tile = { root, parts, cells, patient, thresholds, visible };
  updateTile(tile, patient, thresholds);
  return tile;
}

/** Shows `patient` (as the list or a `patient` event gives it) on `tile`. */
export function updateTile(tile, patient, thresholds) {
  tile.patient = patient;
  if (thresholds) tile.thresholds = thresholds;
  const { root, parts } = tile;
  if (root.tagName === "A") setAttr(root, "href", `/patients/${encodeURIComponent(patient.key)}`);
  setAttr(root, "data-message", patient.last_message_id);
  // A device whose messages name no patient: marked, and named by its device id.
  const unassigned = patient.unassigned === true;
  toggle(root, "unassigned", unassigned);
  setText(parts.name, unassigned ? "Unassigned" : patient.name || "(no name)");
  toggle(parts.name, "unknown", !unassigned && !patient.name);
  toggle(parts.name, "unassigned-mark", unassigned);
  const details = unassigned
    ? `device ${patient.device || patient.key}`
    : [patient.id || patient.key, sexLetter(patient.sex), ageYears(patient.birth_date)].filter(Boolean).join(" · ");
  setText(parts.pid, details);
  setAttr(parts.pid, "title", unassigned
    ? "no patient (PID-3 empty or absent): shown under its device"
    : [patient.identifiers, patient.birth_date && `born ${patient.birth_date}`, patient.device && `device ${patient.device}`].filter(Boolean).join(", "));
  setText(parts.where, location(patient.location) || (unassigned ? "no location" : patient.device) || "");
  let worst = 0;
  const sparks = new Map((patient.sparklines || []).map((sp) => [sp.code, sp]));
  for (const c of tile.cells) {
    worst = Math.max(worst, updateCell(tile, c, patient, sparks));
  }
  setAttr(root, "data-severity", worst);
  parts.alarm.update(patient.alarms);
  toggle(root, "alarmed", !parts.alarm.root.hidden);
  tickTile(tile);
}

// One cell; returns its severity (0, 1 warning, 2 critical).
function updateCell(tile, c, patient, sparks) {
  const values = c.cell.vitals.map((v) => pick(patient.latest, v));
  const main = values[0] || values.find(Boolean) || null;
  c.values = values;
  setText(c.label, cellLabel(c.cell, main));
  const meta = VITAL_BY_NAME[c.cell.vitals[0]];
  setText(c.unit, main ? unitLabel(main.units, main.units_text) || c.cell.unit || meta.unit : c.cell.unit || meta.unit);
  let level = 0;
  let alertText = "";
  const titles = [];
  c.cell.vitals.forEach((vital, i) => {
    const value = values[i];
    if (!value) return;
    titles.push(`${value.code_text || value.code} ${value.value} ${value.units_text || value.units}` +
      (value.reference_range ? ` (range ${value.reference_range})` : "") +
      (value.abnormal_flags ? ` flag ${value.abnormal_flags}` : "") +
      ` status ${value.result_status || "-"}, measured ${localDateTime(valueTime(value))}`);
    if (value.state === "ok" && value.alert) {
      const l = value.alert.level === "critical" ? 2 : 1;
      if (l > level) {
        level = l;
        const name = c.cell.vitals.length > 1 ? `${VITAL_BY_NAME[vital].label} ` : "";
        alertText = `${name}${alertWords(value.alert, value.abnormal_flags)}`;
      }
    }
  });
  const decimals = meta.decimals;
  let text;
  let extra = "";
  let state = "ok";
  if (!main) {
    text = "—";
    state = "absent";
  } else if (c.cell.id === "nibp") {
    const [sys, dia, mean] = values;
    const shown = (v) => (v && v.state === "ok" && Number.isFinite(v.numeric) ? number(v.numeric, 0) : null);
    if (shown(sys) === null && shown(dia) === null) {
      const word = (sys || dia || mean);
      text = word ? stateWord(word) : "—";
      state = word ? word.state : "absent";
    } else {
      text = `${shown(sys) ?? stateWord(sys || { state: "missing" })}/${shown(dia) ?? stateWord(dia || { state: "missing" })}`;
      state = shown(sys) !== null && shown(dia) !== null ? "ok" : "partial";
    }
    // The mean beside, unless nothing of the measurement is a number (one word then says it).
    const anyNumber = [sys, dia, mean].some((v) => shown(v) !== null);
    if (mean && anyNumber) extra = shown(mean) !== null ? `(${shown(mean)})` : `(${stateWord(mean)})`;
  } else if (main.state === "ok" && Number.isFinite(main.numeric)) {
    text = number(main.numeric, decimals);
  } else if (main.state === "ok") {
    text = main.value;
  } else {
    text = stateWord(main);
    state = main.state;
  }
  setText(c.value, text);
  setText(c.extra, extra);
  setText(c.alert, alertText);
  setAttr(c.root, "data-state", state);
  setAttr(c.root, "title", titles.join("\n") || "not reported");
  toggle(c.root, "warning", level === 1);
  toggle(c.root, "critical", level === 2);
  toggle(c.root, "not-number", state !== "ok" && state !== "partial");
  if (c.source) {
    if (main) setAttr(c.source, "href", `/messages/${main.message_id}?obx=${main.index}`);
    toggle(c.source, "hidden", !main);
  }
  // Sparklines: the vital's own series (NIBP: systolic and diastolic).
  const lines = [];
  c.cell.vitals.slice(0, 2).forEach((vital, i) => {
    const value = values[i];
    const sp = value && sparks.get(value.code);
    if (sp) lines.push({ times: sp.times_ms, values: sp.values, cls: i === 0 ? "line" : "line second" });
  });
  c.lines = lines;
  c.normal = main && c.cell.id !== "nibp" ? main.reference_range : null;
  if (tile.visible) drawSpark(c);
  return level;
}

// Sparklines are drawn only while the tile is on the screen (`tile.visible`, which the
// view keeps): with 200 patients most are not, and their lines would be most of the work.
function drawSpark(c) {
  const lines = c.lines || [];
  const key = `${c.normal}|${lines.map((l) => `${l.times.length}:${l.times[l.times.length - 1]}:${l.values[l.values.length - 1]}`).join("|")}`;
  if (c.sparkKey === key) return;
  c.sparkKey = key;
  drawSparkline(c.spark, lines, parseRange(c.normal));
}

/** Marks the tile on or off the screen; on it, its sparklines are brought up to date. */
export function setVisible(tile, visible) {
  tile.visible = visible;
  if (visible) for (const c of tile.cells) drawSpark(c);
}

/** Whether every latest value is marked demo (a monitor in demo mode, OBX-8 `DEMO`). */
function demoOnly(patient) {
  const latest = patient.latest || [];
  return latest.length > 0 && latest.every((r) => r.mark === "demo");
}

/** The parts that change with time alone: ages and the status. */
export function tickTile(tile) {
  const { patient, parts, root } = tile;
  const status = effectiveStatus(patient, tile.thresholds);
  setAttr(root, "data-status", status);
  const noValues = status === "live" && patient.values_missing;
  toggle(root, "no-values", noValues);
  const lastAt = parseTime(patient.last_message_at);
  if (status === "stale" || status === "offline") {
    setText(parts.bannerWord, status === "stale" ? "STALE" : "OFFLINE");
    setText(parts.bannerText, `no message for ${age(lastAt).replace(" ago", "")}, values below are old`);
  } else if (noValues && demoOnly(patient)) {
    setText(parts.bannerWord, "DEMO MODE");
    setText(parts.bannerText, "the monitor sends simulated values (DEMO), not the patient's");
  } else if (noValues) {
    setText(parts.bannerWord, "NO VALUES");
    setText(parts.bannerText, "the monitor sends messages without any valid value");
  } else {
    setText(parts.bannerWord, "");
    setText(parts.bannerText, "");
  }
  setText(parts.foot, Number.isFinite(lastAt) ? `last message ${localDateTime(lastAt)} · ${age(lastAt)}` : "no message yet");
  for (const c of tile.cells) {
    const main = c.values && (c.values[0] || c.values.find(Boolean));
    setText(c.age, main ? shortAge(valueTime(main)) : "");
  }
}
