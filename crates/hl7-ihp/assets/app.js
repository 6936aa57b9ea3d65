// The dashboard's entry: the patients as the event stream keeps them, the router over the
// path addresses (/, /patients/{key}, /operations, /messages, /messages/{id}), the
// connection state and the clock in the header.

import { api, authHeaders, askToken } from "./api.js";
import { EventStream } from "./sse.js";
import { syncClock, localTime } from "./format.js";
import * as ward from "./ward.js";

// Events waiting to be applied, at most; past it the lists are read again.
const MAX_QUEUE = 20_000;

// The `key` of a patient event without parsing it: the first `"key":"…"` in the JSON text.
// JSON escapes every quote inside a string, so this is a property named key, and only the
// patient itself has one. null when it is not there (the event is then parsed).
const KEY = /"key":"((?:[^"\\]|\\.)*)"/;

function patientKey(text) {
  const match = KEY.exec(text);
  if (!match) return null;
  try {
    return JSON.parse(`"${match[1]}"`);
  } catch {
    return null;
  }
}

/** The patients and the event stream, shared by the views. */
class Live {
  constructor() {
    this.patients = new Map();
    this.thresholds = null;
    this.loaded = false;
    this.listeners = new Set();
    this.link = "connecting";
    this.loading = null;
    this.queue = [];
    this.flushing = false;
    this.firstLoad = new Promise((resolve) => {
      this.loadedOnce = resolve;
    });
  }

  /** Calls `fn(event)` for each event (`{event, data}`); returns the unsubscribe. */
  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  emit(event) {
    for (const fn of [...this.listeners]) {
      try {
        fn(event);
      } catch (error) {
        console.error(error);
      }
    }
  }

  /** Reads the list of patients (again); a newer patient from an event is kept. */
  load() {
    if (this.loading) return this.loading;
    this.loading = (async () => {
      try {
        const body = await api("/api/v1/patients");
        syncClock(body.generated_at);
        this.thresholds = {
          stale_after_seconds: body.stale_after_seconds,
          offline_after_seconds: body.offline_after_seconds,
        };
        const next = new Map();
        for (const patient of body.patients) {
          const held = this.patients.get(patient.key);
          next.set(patient.key, held && held.last_message_id > patient.last_message_id ? held : patient);
        }
        this.patients = next;
        this.loaded = true;
        this.emit({ event: "list" });
      } finally {
        this.loading = null;
        this.loadedOnce();
      }
    })();
    return this.loading;
  }

  /**
   * Takes an event as the stream gives it (`data` as text). Events wait in a queue that is
   * worked off a moment later in one go; of several `patient` events for one patient only
   * the last is parsed, so a burst (a reconnection, a busy ward) costs one update per
   * patient. `observation` events are not used: each is followed by its `patient` event.
   */
  enqueue(event) {
    if (event.event === "observation") return;
    this.queue.push(event);
    if (this.queue.length > MAX_QUEUE) {
      // Too far behind: read everything again instead.
      this.queue = [];
      this.load().catch((error) => console.error(error));
      return;
    }
    if (!this.flushing) {
      this.flushing = true;
      setTimeout(() => this.flush(), 0);
    }
  }

  flush() {
    this.flushing = false;
    const queue = this.queue;
    this.queue = [];
    const last = new Map();
    queue.forEach((e, i) => {
      if (e.event === "patient") {
        const key = patientKey(e.data);
        if (key !== null) last.set(key, i);
      }
    });
    queue.forEach((e, i) => {
      if (e.event === "patient") {
        const key = patientKey(e.data);
        if (key !== null && last.get(key) !== i) return;
      }
      let data;
      try {
        data = JSON.parse(e.data);
      } catch {
        return;
      }
      this.apply({ event: e.event, data });
    });
  }

  apply({ event, data }) {
    if (event === "patient" && data && data.key !== undefined) {
      const held = this.patients.get(data.key);
      if (held && held.last_message_id > data.last_message_id) return;
      this.patients.set(data.key, data);
    } else if (event === "status" && data && data.patient !== null && data.patient !== undefined) {
      const held = this.patients.get(data.patient);
      if (held) {
        held.status = data.status;
        if (data.last_message_at) held.last_message_at = data.last_message_at;
      }
    } else if (event === "reset") {
      this.load().catch((error) => console.error(error));
    }
    this.emit({ event, data });
  }

  setLink(state) {
    if (state === this.link) return;
    this.link = state;
    const node = document.getElementById("link");
    node.className = `link ${state}`;
    node.textContent = { live: "live", connecting: "connecting…", down: "NO CONNECTION: values are not updated" }[state];
    document.body.classList.toggle("link-down", state === "down");
    // Back after a gap: what was missed comes as events, or as a reset.
    this.emit({ event: "link", data: { state } });
  }
}

const live = new Live();

const ROUTES = [
  { pattern: /^\/$/, view: "ward" },
  { pattern: /^\/patients\/([^/]+)$/, view: "patient" },
  { pattern: /^\/operations$/, view: "operations" },
  { pattern: /^\/messages$/, view: "messages" },
  { pattern: /^\/messages\/(\d+)$/, view: "message" },
];

const MODULES = {
  ward: () => Promise.resolve(ward),
  patient: () => import("./patient.js"),
  operations: () => import("./operations.js"),
  messages: () => import("./messages.js"),
  message: () => import("./messages.js"),
};

let current = null;
let generation = 0;

/** Goes to a path of the dashboard without reloading. */
export function navigate(url, { replace = false } = {}) {
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  route();
}

async function route() {
  const mine = ++generation;
  const path = location.pathname;
  const match = ROUTES.map((r) => ({ r, m: r.pattern.exec(path) })).find((x) => x.m);
  if (current) {
    current.unmount();
    current = null;
  }
  const main = document.getElementById("view");
  const view = match ? match.r.view : "missing";
  for (const a of document.querySelectorAll("nav a")) {
    const active = a.dataset.view === view || (view === "message" && a.dataset.view === "messages") || (view === "patient" && a.dataset.view === "ward");
    a.classList.toggle("active", active);
    if (active) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (!match) {
    main.replaceChildren(Object.assign(document.createElement("p"), { className: "empty", textContent: "No such page." }));
    return;
  }
  const module = await MODULES[view]();
  if (mine !== generation) return;
  const params = match.m.slice(1).map(decodeURIComponent);
  const ctx = { live, navigate, params, search: new URLSearchParams(location.search) };
  current = view === "message" ? module.mountMessage(main, ctx) : module.mount(main, ctx);
}

// Links inside the dashboard change the view without a reload.
document.addEventListener("click", (event) => {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const a = event.target.closest("a[href]");
  if (!a || a.target || a.hasAttribute("download")) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith("/api/")) return;
  event.preventDefault();
  if (url.pathname + url.search !== location.pathname + location.search) navigate(url.pathname + url.search + url.hash);
});
window.addEventListener("popstate", route);

function tick() {
  document.getElementById("clock").textContent = localTime(Date.now());
  if (current && current.tick) current.tick();
}

// The stream's body is read once the first list is drawn (and a frame painted): the first
// paint does not wait for a second of events to be parsed.
const painted = () => live.firstLoad.then(() => new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0))));
const stream = new EventStream("/api/v1/events", {
  onEvent: (event) => live.enqueue(event),
  ready: painted,
  onState: (state) => live.setLink(state),
  headers: authHeaders,
  onUnauthorized: () => askToken(Boolean(authHeaders().Authorization)),
});

// The list first: its request goes out before anything else is done.
live.load().catch((error) => {
  console.error(error);
  live.emit({ event: "error", data: { message: error.message } });
});
route();
stream.start();
tick();
setInterval(tick, 1000);
