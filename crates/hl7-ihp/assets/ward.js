// The ward view: a tile per patient, sorted and searched, kept current from the event
// stream (never by polling). Tiles are built once and updated in place; updates that
// arrive together are drawn in one animation frame.

import { h, setText } from "./dom.js";
import { createTile, updateTile, tickTile, setVisible } from "./tile.js";
import { location as place, parseTime } from "./format.js";

const SORTS = {
  location: "Location",
  name: "Name",
  severity: "Most abnormal first",
  staleness: "Longest silent first",
};

const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

function byLocation(a, b) {
  return collator.compare(a.location || "\uffff", b.location || "\uffff") || collator.compare(a.name || "", b.name || "") || collator.compare(a.key, b.key);
}

function comparator(sort, tiles) {
  const severity = (p) => Number(tiles.get(p.key)?.root.dataset.severity || p.severity || 0);
  switch (sort) {
    case "name":
      return (a, b) => collator.compare(a.name || "\uffff", b.name || "\uffff") || byLocation(a, b);
    case "severity":
      return (a, b) => severity(b) - severity(a) || byLocation(a, b);
    case "staleness":
      return (a, b) => parseTime(a.last_message_at) - parseTime(b.last_message_at) || byLocation(a, b);
    default:
      return byLocation;
  }
}

function matches(patient, q) {
  if (!q) return true;
  const needle = q.toLocaleLowerCase();
  return [patient.id, patient.key, patient.name, patient.location, place(patient.location), patient.device]
    .some((text) => (text || "").toLocaleLowerCase().includes(needle));
}

// Columns so that all tiles fit on the screen when they can, as large as they can be.
// The least width of a tile: large (readable across a room) or compact (more at once).
const SIZES = { large: { label: "Large tiles", min: 330 }, compact: { label: "Compact tiles", min: 232 } };
const PAD = 16;
// The least height of a tile in a row of its own; fewer patients than fit get a row each.
const ROW_HEIGHT = 150;
const GAP = 10;
const ASPECT = 0.74;

function columns(n, width, height, minTile) {
  const most = Math.max(1, Math.floor(width / minTile));
  let best = most;
  let bestWidth = 0;
  for (let cols = 1; cols <= most; cols++) {
    const rows = Math.ceil(n / cols);
    const balanced = Math.ceil(n / rows);
    const tileWidth = width / balanced;
    if (rows * tileWidth * ASPECT <= height && tileWidth > bestWidth) {
      best = balanced;
      bestWidth = tileWidth;
    }
  }
  return Math.min(best, Math.max(1, n), most);
}

/** Mounts the ward view in `main`. */
export function mount(main, ctx) {
  const { live, search } = ctx;
  let q = search.get("q") || "";
  let sort = SORTS[search.get("sort")] ? search.get("sort") : "location";
  const tiles = new Map();
  const byNode = new WeakMap();
  // Which tiles are on the screen (or nearly): only those draw their sparklines.
  const seen = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      const tile = byNode.get(entry.target);
      if (tile) setVisible(tile, entry.isIntersecting);
    }
  }, { rootMargin: "300px 0px" });
  const dirty = new Set();
  let frame = 0;
  let everything = true;

  const input = h("input", { type: "search", placeholder: "Search name, id or bed", value: q, "aria-label": "Search patients" });
  let size = SIZES[search.get("size")] ? search.get("size") : "large";
  const sizes = h("select", { "aria-label": "Tile size" }, Object.entries(SIZES).map(([value, { label }]) => h("option", { value, text: label, selected: value === size })));
  const select = h("select", { "aria-label": "Sort" }, Object.entries(SORTS).map(([value, text]) => h("option", { value, text, selected: value === sort })));
  const summary = h("div", { class: "summary", "aria-live": "polite" });
  const grid = h("div", { class: size === "compact" ? "ward compact" : "ward", id: "ward" });
  const note = h("p", { class: "empty", text: "Loading patients…" });
  main.replaceChildren(
    h("div", { class: "toolbar" }, h("h1", { text: "Ward" }), summary, h("div", { class: "controls" }, input, select, sizes)),
    h("p", { class: "link-banner", role: "alert", text: "No connection to the receiver: the values shown are not being updated." }),
    note,
    grid,
  );

  let gridTop = 0;

  function remember() {
    const params = new URLSearchParams();
    if (q) params.set("q", q);
    if (sort !== "location") params.set("sort", sort);
    if (size !== "large") params.set("size", size);
    const text = params.toString();
    history.replaceState(null, "", text ? `/?${text}` : "/");
  }
  input.addEventListener("input", () => {
    q = input.value.trim();
    remember();
    schedule(true);
  });
  summary.addEventListener("click", (event) => {
    const chip = event.target.closest("button[data-sort]");
    if (!chip) return;
    sort = chip.dataset.sort;
    select.value = sort;
    remember();
    schedule(true);
    window.scrollTo(0, 0);
  });
  sizes.addEventListener("change", () => {
    size = sizes.value;
    grid.classList.toggle("compact", size === "compact");
    remember();
    schedule(true);
  });
  select.addEventListener("change", () => {
    sort = select.value;
    remember();
    schedule(true);
  });

  function schedule(all) {
    if (all) everything = true;
    if (!frame) frame = requestAnimationFrame(draw);
  }

  function draw() {
    frame = 0;
    const keys = everything ? [...live.patients.keys()] : [...dirty];
    for (const key of keys) {
      const patient = live.patients.get(key);
      if (!patient) continue;
      const held = tiles.get(key);
      if (held) updateTile(held, patient, live.thresholds);
      else {
        const tile = createTile(patient, { thresholds: live.thresholds, visible: false });
        tiles.set(key, tile);
        byNode.set(tile.root, tile);
        seen.observe(tile.root);
      }
    }
    if (everything) {
      for (const [key, tile] of tiles) {
        if (!live.patients.has(key)) {
          seen.unobserve(tile.root);
          tile.root.remove();
          tiles.delete(key);
        }
      }
    }
    const structural = everything || keys.some((key) => !tiles.get(key)?.root.isConnected) || sort !== "location";
    dirty.clear();
    everything = false;
    if (structural) arrange();
    summarize();
  }

  // Filters and orders the tiles, moving DOM nodes only when the order changed.
  function arrange() {
    const visible = [...live.patients.values()].filter((p) => matches(p, q)).sort(comparator(sort, tiles));
    const wanted = visible.map((p) => tiles.get(p.key).root);
    if (!live.loaded) setText(note, "Loading patients…");
    else if (live.patients.size === 0) setText(note, "No patients yet: a monitor's patient appears here with its first message.");
    else if (wanted.length === 0) setText(note, `No patient matches “${q}”.`);
    else setText(note, "");
    note.hidden = note.textContent === "";
    // The grid's top is read while it is empty (a cheap layout): reading the layout after
    // the tiles changed would make the browser lay out all of them here.
    if (grid.childElementCount === 0) gridTop = grid.getBoundingClientRect().top + window.scrollY;
    const present = [...grid.children];
    if (wanted.length !== present.length || wanted.some((node, i) => node !== present[i])) grid.replaceChildren(...wanted);
    const height = window.innerHeight - gridTop - PAD;
    const rows = size === "large" && wanted.length > 0 && wanted.length * ROW_HEIGHT <= height;
    grid.classList.toggle("rows", rows);
    if (rows) {
      grid.style.setProperty("--rows-height", `${height}px`);
      grid.style.setProperty("--row-height", `${Math.floor((height - GAP * (wanted.length - 1)) / wanted.length)}px`);
    } else {
      grid.style.setProperty("--columns", String(columns(wanted.length, window.innerWidth - 2 * PAD, height, SIZES[size].min)));
    }
  }

  function summarize() {
    let n = 0;
    let unassigned = 0;
    const counts = { critical: 0, warning: 0, stale: 0, offline: 0, novalues: 0 };
    for (const tile of tiles.values()) {
      if (tile.root.classList.contains("unassigned")) unassigned++;
      else n++;
      const severity = Number(tile.root.dataset.severity || 0);
      const status = tile.root.dataset.status;
      if (status === "stale") counts.stale++;
      else if (status === "offline") counts.offline++;
      else if (tile.root.classList.contains("no-values")) counts.novalues++;
      if (status === "live" && severity === 2) counts.critical++;
      else if (status === "live" && severity === 1) counts.warning++;
    }
    const parts = [h("span", { class: "count", text: `${n} patient${n === 1 ? "" : "s"}${unassigned > 0 ? ` · ${unassigned} unassigned` : ""}` })];
    const words = { critical: "critical", warning: "warning", stale: "stale", offline: "offline", novalues: "no values" };
    for (const [kind, count] of Object.entries(counts)) {
      // A chip sorts the ward so that those patients come first.
      const order = kind === "critical" || kind === "warning" ? "severity" : "staleness";
      if (count > 0) parts.push(h("button", { type: "button", class: `chip ${kind}`, title: `sort: ${SORTS[order].toLowerCase()}`, data: { sort: order }, text: `${count} ${words[kind]}` }));
    }
    const key = parts.map((p) => p.textContent).join("|");
    if (summary.dataset.key !== key) {
      summary.dataset.key = key;
      summary.replaceChildren(...parts);
    }
  }

  const unsubscribe = live.subscribe(({ event, data }) => {
    if (event === "list") schedule(true);
    else if (event === "patient" && data) {
      dirty.add(data.key);
      schedule(!tiles.has(data.key));
    } else if (event === "status" && data && data.patient) {
      dirty.add(data.patient);
      schedule(false);
    } else if (event === "error") {
      setText(note, `Could not read the patients: ${data.message}`);
      note.hidden = false;
    }
  });
  const onResize = () => schedule(true);
  window.addEventListener("resize", onResize);
  if (live.loaded) draw();

  return {
    tick() {
      let changed = false;
      for (const tile of tiles.values()) {
        const before = tile.root.dataset.status;
        tickTile(tile);
        changed ||= before !== tile.root.dataset.status;
      }
      if (changed) summarize();
    },
    unmount() {
      unsubscribe();
      seen.disconnect();
      window.removeEventListener("resize", onResize);
      if (frame) cancelAnimationFrame(frame);
    },
  };
}
