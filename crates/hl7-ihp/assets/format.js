// What the views share about showing values: the bedside vitals in tile order, units as a
// nurse reads them, local times and ages, locations, statuses and alert words.

/** The vitals in the order tiles show them; `vital` is the API's classification. */
export const VITALS = [
  { vital: "heart_rate", label: "HR", title: "Heart rate", unit: "bpm", decimals: 0 },
  { vital: "spo2", label: "SpO₂", title: "SpO₂", unit: "%", decimals: 0 },
  { vital: "resp_rate", label: "RR", title: "Respiration rate", unit: "/min", decimals: 0 },
  { vital: "nibp_sys", label: "SYS", title: "NIBP systolic", unit: "mmHg", decimals: 0 },
  { vital: "nibp_dia", label: "DIA", title: "NIBP diastolic", unit: "mmHg", decimals: 0 },
  { vital: "nibp_mean", label: "MAP", title: "NIBP mean", unit: "mmHg", decimals: 0 },
  { vital: "temperature", label: "TEMP", title: "Temperature", unit: "°C", decimals: 1 },
];

export const VITAL_BY_NAME = Object.fromEntries(VITALS.map((v) => [v.vital, v]));

export const NIBP = ["nibp_sys", "nibp_dia", "nibp_mean"];

// OBX-6 as MDC codes, MDC reference ids or UCUM, as a nurse reads them.
const UNITS = {
  "264864": "bpm", MDC_DIM_BEAT_PER_MIN: "bpm", "{beats}/min": "bpm", "/min": "/min",
  "262688": "%", MDC_DIM_PERCENT: "%", "%": "%",
  "264928": "/min", MDC_DIM_RESP_PER_MIN: "/min", "{breaths}/min": "/min",
  "266016": "mmHg", MDC_DIM_MMHG: "mmHg", "mm[Hg]": "mmHg", mmHg: "mmHg",
  "268192": "°C", MDC_DIM_DEGC: "°C", Cel: "°C", "°C": "°C",
  "266560": "°F", MDC_DIM_FAHR: "°F", "[degF]": "°F",
  "266048": "kPa", MDC_DIM_KILO_PASCAL: "kPa",
};

/** Units for display: a known code or name, else OBX-6 as sent. */
export function unitLabel(units, unitsText) {
  return UNITS[units] || UNITS[unitsText] || units || unitsText || "";
}

/** A number with the vital's decimals, or the value as sent. */
export function number(value, decimals) {
  if (typeof value !== "number" || !Number.isFinite(value)) return "";
  return decimals === undefined ? String(value) : value.toFixed(decimals);
}

// The browser's clock against the server's, from `generated_at`: ages are computed on the
// server's time line, so a browser whose clock is off does not make monitors stale.
let skewMs = 0;

/** Learns the server's clock from a response's `generated_at`. */
export function syncClock(generatedAt) {
  const at = Date.parse(generatedAt);
  if (Number.isFinite(at)) skewMs = at - Date.now();
}

/** Now on the server's time line, in milliseconds. */
export function now() {
  return Date.now() + skewMs;
}

/** Milliseconds of an RFC 3339 time, or NaN. */
export function parseTime(text) {
  return text ? Date.parse(text) : NaN;
}

// An observation time with an offset or `Z` is an instant; without one it is the device's
// wall clock, which we cannot place, so the time received stands in for it.
const HAS_OFFSET = /(Z|[+-]\d\d:?\d\d)$/;

// Values are objects from the API that are never changed, so each one's time is worked
// out once.
const TIMES = new WeakMap();

/** When a value was measured, as well as we know: milliseconds. */
export function valueTime(value) {
  let at = TIMES.get(value);
  if (at === undefined) {
    at = NaN;
    if (value.observed_at && HAS_OFFSET.test(value.observed_at)) at = Date.parse(value.observed_at);
    if (!Number.isFinite(at)) at = parseTime(value.received_at);
    TIMES.set(value, at);
  }
  return at;
}

/** "12 s ago", "4 min ago", "3 h ago", "2 d ago". */
export function age(ms) {
  if (!Number.isFinite(ms)) return "";
  const s = Math.max(0, Math.round((now() - ms) / 1000));
  if (s < 1) return "now";
  if (s < 120) return `${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 120) return `${m} min ago`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours} h ago`;
  return `${Math.floor(hours / 24)} d ago`;
}

/** Compact age for tiles: "12 s", "4 min". */
export function shortAge(ms) {
  return age(ms).replace(" ago", "");
}

// A 24-hour clock, as clinical displays use, in the browser's time zone and date order.
// Made on first use: building them costs tens of milliseconds that the first paint need
// not wait for.
let formats = null;

function fmt() {
  if (formats === null) {
    formats = {
      time: new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" }),
      hourMinute: new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" }),
      date: new Intl.DateTimeFormat(undefined, { year: "numeric", month: "2-digit", day: "2-digit" }),
      precise: new Intl.DateTimeFormat(undefined, {
        hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3, hourCycle: "h23",
      }),
    };
  }
  return formats;
}

/** Local time of day, `14:03:07`. */
export function localTime(ms) {
  return Number.isFinite(ms) ? fmt().time.format(ms) : "";
}

/** Local `14:03`, for axes. */
export function hourMinute(ms) {
  return Number.isFinite(ms) ? fmt().hourMinute.format(ms) : "";
}

// Today's local midnight and the next one, found again when the day has passed.
let today = [0, 0];

function isToday(ms) {
  const t = Date.now();
  if (t >= today[1] || t < today[0]) {
    const start = new Date(t);
    start.setHours(0, 0, 0, 0);
    const end = new Date(start);
    end.setDate(end.getDate() + 1);
    today = [start.getTime(), end.getTime()];
  }
  return ms >= today[0] && ms < today[1];
}

/** Local time of day, with the date before it when it is not today. */
export function localDateTime(ms) {
  if (!Number.isFinite(ms)) return "";
  return isToday(ms) ? fmt().time.format(ms) : `${fmt().date.format(ms)} ${fmt().time.format(ms)}`;
}

/** Local date and time with milliseconds, for the message browser and records. */
export function preciseTime(ms) {
  if (!Number.isFinite(ms)) return "";
  return `${fmt().date.format(ms)} ${fmt().precise.format(ms)}`;
}

/** PV1-3 `ICU^^BED07^HOSP` as `ICU · BED07 · HOSP`. */
export function location(text) {
  if (!text) return "";
  return text.split("^").map((part) => part.split("&")[0].trim()).filter(Boolean).join(" · ");
}

/** The status words, most serious last. */
export const STATUS_TEXT = { live: "LIVE", stale: "STALE", offline: "OFFLINE" };

/**
 * An alert as words with the limit crossed: `HIGH > 120`, `LOW < 90`, `CRIT > 120`;
 * without a limit, the flag's meaning (`HIGH`, `CRIT LOW`, `ABNORMAL`).
 */
export function alertWords(alert, flags) {
  if (!alert) return "";
  const text = (alert.text || "").trim();
  const f = (flags || "").toUpperCase();
  const limit = /^[<>]/.test(text) ? text : "";
  let direction = "ABNORMAL";
  if (limit.startsWith(">") || f.startsWith("H") || f === ">") direction = "HIGH";
  else if (limit.startsWith("<") || f.startsWith("L") || f === "<") direction = "LOW";
  if (alert.level === "critical") return limit ? `CRIT ${limit}` : `CRIT ${direction}`;
  return limit ? `${direction} ${limit}` : direction;
}

/** What a value that is not a number is shown as: `DEMO`, `NAV`, `NO VALUE`, `INVALID`. */
export function stateWord(value) {
  // A monitor in demo mode (OBX-8 DEMO): simulated, not the patient's; other marks
  // (not obtained, empty, a placeholder such as -999) are no value.
  if (value.mark === "demo") return "DEMO";
  if (value.state === "invalid") return "INVALID";
  if ((value.value || "").trim().toUpperCase() === "NAV") return "NAV";
  return "NO VALUE";
}

/** Age in whole years from an ISO birth date (`1951-03-02`), or "". */
export function ageYears(birthDate) {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(birthDate || "");
  if (!match) return "";
  const today = new Date();
  const [year, month, day] = match.slice(1).map(Number);
  let years = today.getFullYear() - year;
  if (today.getMonth() + 1 < month || (today.getMonth() + 1 === month && today.getDate() < day)) years--;
  return years >= 0 && years < 150 ? `${years} y` : "";
}

/** Patient sex, as the API gives it (`F`) or spelled out (`Female`), as one letter. */
export function sexLetter(sex) {
  return sex ? sex.slice(0, 1).toUpperCase() : "";
}
