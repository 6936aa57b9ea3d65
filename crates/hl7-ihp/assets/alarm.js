// Alarms (ORU^R40, IHE PCD-04): the banner a tile shows for its newest alarm while that is
// active or latched, and the alarm list of the patient view. The banner takes any object
// with `alarms` (newest first), so a device's tile can use it as a patient's does.

import { h, setText, setAttr, toggle } from "./dom.js";
import { localDateTime, parseTime } from "./format.js";

/** States in which an alarm still asks for attention. */
const RAISED = new Set(["active", "latched"]);

/** The alarm to show in a banner: the newest one, while it is active or latched. */
export function raisedAlarm(alarms) {
  const newest = (alarms || [])[0];
  return newest && RAISED.has(newest.state) ? newest : null;
}

/** The alarm's type as a short phrase: its text, else its MDC name without the prefix. */
export function alarmTitle(alarm) {
  if (alarm.text) return alarm.text;
  return (alarm.type_text || alarm.type_code || "alarm").replace(/^MDC_EVT_/, "").replace(/_/g, " ");
}

/** The measurement that raised it, `SpO2 86 % (limit 90-100)`-like, or "". */
export function alarmMeasurement(alarm) {
  const m = alarm.measurement;
  if (!m) return "";
  const name = (m.code_text || m.code).replace(/^MDC_/, "").replace(/_/g, " ");
  const units = (m.units || "").replace(/^MDC_DIM_/, "").replace("PERCENT", "%").replace("BEAT_PER_MIN", "/min");
  return `${name} ${m.value}${units ? ` ${units}` : ""}${m.limit ? ` (limit ${m.limit})` : ""}`;
}

/** A banner element to place on a tile: `{ root, update(alarms) }`. */
export function createAlarmBanner() {
  const word = h("strong");
  const text = h("span");
  const root = h("div", { class: "alarm-banner", role: "alert", hidden: true }, word, " ", text);
  return {
    root,
    update(alarms) {
      const alarm = raisedAlarm(alarms);
      root.hidden = !alarm;
      if (!alarm) {
        setAttr(root, "data-priority", "");
        return;
      }
      setText(word, `ALARM${alarm.priority ? ` ${alarm.priority.toUpperCase()}` : ""}`);
      const parts = [alarmTitle(alarm), alarmMeasurement(alarm), alarm.state === "latched" ? "latched" : ""].filter(Boolean);
      setText(text, parts.join(" · "));
      setAttr(root, "data-priority", alarm.priority || "");
      setAttr(root, "title", `${alarm.type_text || alarm.type_code} from ${alarm.source}, since ${localDateTime(parseTime(alarm.started_at))}`);
      toggle(root, "latched", alarm.state === "latched");
    },
  };
}

/** The rows of the patient view's alarm list (newest first). */
export function alarmRows(alarms) {
  return (alarms || []).map((a) =>
    h("tr", { data: { priority: a.priority || "", state: a.state } },
      h("td", { text: localDateTime(parseTime(a.started_at)) }),
      h("td", { text: alarmTitle(a) }),
      h("td", { text: a.type_text || a.type_code }),
      h("td", { class: "alarm-priority", text: a.priority || "—" }),
      h("td", { text: [a.state, a.phase].filter(Boolean).join(" / ") }),
      h("td", { text: alarmMeasurement(a) || "—" }),
      h("td", { text: a.source }),
      h("td", {}, h("a", { href: `/messages/${a.message_id}`, text: `#${a.message_id}` }))));
}
