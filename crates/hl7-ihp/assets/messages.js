// The message browser (/messages, filters in the address as in the API) and one message
// (/messages/{id}): its metadata, the raw text segment by segment, and the parsed fields.

import { api, query } from "./api.js";
import { h, setText } from "./dom.js";
import { parseTime, preciseTime, location } from "./format.js";

const FILTERS = ["outcome", "type", "facility", "patient", "since", "until", "limit"];
const OUTCOMES = { "": "any", accepted: "accepted", refused: "refused (error or rejected)", error: "error", rejected: "rejected" };

// `2026-12-01T12:00:00Z` ↔ the local `2026-12-01T13:00` of a datetime-local input.
function toLocalInput(text) {
  const t = Date.parse(text);
  if (!Number.isFinite(t)) return "";
  const d = new Date(t - new Date(t).getTimezoneOffset() * 60_000);
  return d.toISOString().slice(0, 16);
}

function fromLocalInput(text) {
  if (!text) return "";
  const t = new Date(text).getTime();
  return Number.isFinite(t) ? new Date(t).toISOString().replace(".000Z", "Z") : "";
}

/** Mounts the list. */
export function mount(main, ctx) {
  const { navigate, search } = ctx;
  const abort = new AbortController();
  const signal = abort.signal;
  const filters = Object.fromEntries(FILTERS.map((f) => [f, search.get(f) || ""]));

  const inputs = {
    outcome: h("select", { name: "outcome" }, Object.entries(OUTCOMES).map(([value, text]) => h("option", { value, text, selected: value === filters.outcome }))),
    type: h("input", { name: "type", placeholder: "ORU^R01", value: filters.type }),
    facility: h("input", { name: "facility", placeholder: "MSH-4", value: filters.facility }),
    patient: h("input", { name: "patient", placeholder: "patient key", value: filters.patient }),
    since: h("input", { name: "since", type: "datetime-local", step: 1, value: toLocalInput(filters.since) }),
    until: h("input", { name: "until", type: "datetime-local", step: 1, value: toLocalInput(filters.until) }),
    limit: h("input", { name: "limit", type: "number", min: 1, max: 1000, placeholder: "100", value: filters.limit }),
  };
  const labels = { outcome: "Outcome", type: "Type (MSH-9)", facility: "Facility (MSH-4)", patient: "Patient", since: "Received since", until: "Received until", limit: "Per page" };
  const form = h("form", { class: "filters" },
    FILTERS.map((f) => h("label", {}, labels[f], inputs[f])),
    h("button", { type: "submit", text: "Apply" }),
    h("button", { type: "button", text: "Clear", on: { click: () => navigate("/messages") } }));
  const rows = h("tbody", { id: "messages" });
  const more = h("button", { type: "button", class: "more", text: "Older messages", hidden: true });
  const status = h("p", { class: "empty", hidden: true });
  main.replaceChildren(
    h("div", { class: "toolbar" }, h("h1", { text: "Messages" }), h("span", { class: "hint", text: "newest first; times in local time" })),
    form,
    status,
    h("table", { class: "list" },
      h("thead", {}, h("tr", {}, ["Id", "Received", "Peer", "Sender (MSH-3)", "Facility", "Control id", "Type", "Outcome", "ACK", "Reason", "Patient", "Times"].map((t) => h("th", { text: t })))),
      rows),
    more);

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = {};
    for (const f of FILTERS) {
      const v = f === "since" || f === "until" ? fromLocalInput(inputs[f].value) : inputs[f].value.trim();
      if (v) next[f] = v;
    }
    navigate(`/messages${query(next)}`);
  });

  let cursor = null;
  async function load(older) {
    const params = {};
    for (const f of FILTERS) if (filters[f]) params[f] = filters[f];
    if (older) params.cursor = cursor;
    try {
      const body = await api(`/api/v1/messages${query(params)}`, { signal });
      const made = body.messages.map((m) => row(m, navigate));
      if (older) rows.append(...made);
      else rows.replaceChildren(...made);
      cursor = body.next_cursor || null;
      more.hidden = !cursor;
      status.hidden = rows.children.length > 0;
      setText(status, "No message matches these filters.");
    } catch (error) {
      if (signal.aborted) return;
      status.hidden = false;
      setText(status, error.problem && error.problem.parameter ? `${error.problem.parameter}: ${error.message}` : `Could not read the messages: ${error.message}`);
    }
  }
  more.addEventListener("click", () => load(true));
  load(false);
  return { unmount: () => abort.abort() };
}

function row(m, navigate) {
  const href = `/messages/${m.id}`;
  const tr = h("tr", { class: "row", data: { id: m.id } },
    h("td", {}, h("a", { href, text: String(m.id) })),
    h("td", { text: preciseTime(parseTime(m.received_at)) }),
    h("td", { class: "mono", text: m.peer || "" }),
    h("td", { class: "mono", text: m.sending_application || "" }),
    h("td", { class: "mono", text: m.sending_facility || "" }),
    h("td", { class: "mono", text: m.control_id || "" }),
    h("td", { class: "mono", text: m.message_type || "" }),
    h("td", {}, h("span", { class: `badge ${m.outcome}`, text: m.outcome })),
    h("td", { class: "mono", text: m.ack_code || "" }),
    h("td", { class: "wrap reason", text: m.reason || "" }),
    h("td", {}, m.patient ? h("a", { href: `/patients/${encodeURIComponent(m.patient)}`, text: m.patient }) : ""),
    h("td", { class: "num", title: "times received (retransmissions)", text: m.n_received > 1 ? String(m.n_received) : "" }));
  tr.addEventListener("click", (event) => {
    if (!event.target.closest("a")) navigate(href);
  });
  return tr;
}

// Field names of the segments devices send, for the parsed view.
const FIELD_NAMES = {
  MSH: { 3: "Sending application", 4: "Sending facility", 5: "Receiving application", 6: "Receiving facility", 7: "Date/time of message", 9: "Message type", 10: "Message control id", 11: "Processing id", 12: "Version", 15: "Accept ACK type", 16: "Application ACK type", 18: "Character set", 21: "Message profile" },
  EVN: { 1: "Event type", 2: "Recorded date/time" },
  PID: { 3: "Patient identifier list", 5: "Patient name", 7: "Date of birth", 8: "Sex", 11: "Address", 18: "Account number" },
  PV1: { 2: "Patient class", 3: "Assigned location", 7: "Attending doctor", 19: "Visit number" },
  OBR: { 1: "Set id", 2: "Placer order number", 3: "Filler order number", 4: "Universal service id", 7: "Observation date/time" },
  OBX: { 1: "Set id", 2: "Value type", 3: "Observation identifier", 4: "Observation sub-id", 5: "Observation value", 6: "Units", 7: "Reference range", 8: "Abnormal flags", 11: "Result status", 14: "Observation date/time", 18: "Equipment instance id" },
  MSA: { 1: "Acknowledgment code", 2: "Message control id", 3: "Text message" },
};

/** Mounts one message. */
export function mountMessage(main, ctx) {
  const id = ctx.params[0];
  const obx = ctx.search.get("obx");
  const abort = new AbortController();
  let view = ctx.search.get("view") === "raw" ? "raw" : "parsed";
  const meta = h("dl", { class: "detail-meta" });
  const tabs = ["parsed", "raw"].map((t) => h("button", { type: "button", class: t === view ? "active" : null, data: { tab: t }, text: t === "parsed" ? "Parsed" : "Raw", on: { click: () => choose(t) } }));
  const body = h("div", { class: "message-body" });
  main.replaceChildren(
    h("div", { class: "toolbar" }, h("a", { href: "/messages", text: "← Messages" }), h("h1", { text: `Message ${id}` })),
    meta,
    h("div", { class: "tabs" }, tabs),
    body);
  let message = null;

  function choose(t) {
    view = t;
    for (const b of tabs) b.classList.toggle("active", b.dataset.tab === t);
    const params = new URLSearchParams(location.search);
    params.set("view", t);
    history.replaceState(null, "", `${location.pathname}?${params}`);
    draw();
  }

  function draw() {
    if (!message) return;
    body.replaceChildren(view === "raw" ? raw(message.raw || "", obx) : parsed(message.parsed, obx, message.reason));
    const target = body.querySelector(".highlight");
    if (target) target.scrollIntoView({ block: "start" });
  }

  api(`/api/v1/messages/${encodeURIComponent(id)}`, { signal: abort.signal }).then((m) => {
    message = m;
    const item = (label, value) => [h("dt", { text: label }), h("dd", {}, value ?? "")];
    meta.replaceChildren(
      ...item("Received", preciseTime(parseTime(m.received_at))),
      ...item("Outcome", h("span", { class: `badge ${m.outcome}`, text: m.outcome })),
      ...item("ACK", m.ack_code || "none"),
      ...item("Last received", m.n_received > 1 ? `${preciseTime(parseTime(m.last_received_at))} (${m.n_received} times)` : "once"),
      ...item("Peer", m.peer),
      ...item("TLS identity", m.peer_identity || "—"),
      ...item("Reason", m.reason ? h("span", { class: "reason", text: m.reason }) : "—"),
      ...item("Sender (MSH-3)", m.sending_application),
      ...item("Facility (MSH-4)", m.sending_facility),
      ...item("Control id", m.control_id),
      ...item("Type", `${m.message_type || ""} ${m.version ? `v${m.version}` : ""}`.trim()),
      ...item("Patient", m.patient ? h("a", { href: `/patients/${encodeURIComponent(m.patient)}`, text: m.patient }) : "—"),
      ...item("Location", location(m.location) || "—"),
      ...item("Device", m.device || "—"));
    draw();
  }).catch((error) => {
    if (!abort.signal.aborted) body.replaceChildren(h("p", { class: "empty", text: error.status === 404 ? "No message with this id." : `Could not read the message: ${error.message}` }));
  });
  return { unmount: () => abort.abort() };
}

// The raw text, one segment a line, the field separators dimmed; the OBX of `obx`
// (0-based among the OBX segments) highlighted.
function raw(text, obx) {
  const pre = h("pre", { class: "raw", id: "raw" });
  const separator = text.startsWith("MSH") ? text.charAt(3) : "|";
  let n = -1;
  for (const segment of text.split(/\r\n|\r|\n/)) {
    if (!segment) continue;
    const isObx = segment.startsWith(`OBX${separator}`);
    if (isObx) n++;
    const line = h("span", { class: `seg${isObx && obx !== null && String(n) === obx ? " highlight" : ""}`, title: isObx ? `OBX ${n + 1}` : null });
    segment.split(separator).forEach((piece, i) => {
      if (i > 0) line.append(h("span", { class: "sep", text: separator }));
      line.append(piece);
    });
    pre.append(line);
  }
  return pre;
}

function parsed(tree, obx, reason) {
  if (!tree) return h("p", { class: "empty", text: `The bytes could not be read as HL7${reason ? `: ${reason}` : ""}. See the raw view.` });
  const root = h("div", { class: "parsed", id: "parsed" });
  const counts = {};
  for (const segment of tree.segments) {
    const ordinal = (counts[segment.id] = (counts[segment.id] || 0) + 1);
    const names = FIELD_NAMES[segment.id] || {};
    const highlight = segment.id === "OBX" && obx !== null && String(ordinal - 1) === obx;
    const rows = segment.fields.map((field) => {
      const comps = (field.repetitions || []).map((r) => r.components || []);
      const detail = comps.length > 1 || (comps[0] && comps[0].length > 1)
        ? comps.map((c, ri) => h("div", { class: "comp", text: `${comps.length > 1 ? `~${ri + 1} ` : ""}${c.map((x, i) => `${i + 1}: ${x}`).filter((x) => !/: $/.test(x)).join("  ·  ")}` }))
        : null;
      return h("tr", {},
        h("td", { class: "pos", text: `${segment.id}-${field.position}` }),
        h("td", { class: "fname", text: names[field.position] || "" }),
        h("td", { class: "val" }, field.value, detail));
    });
    root.append(h("div", { class: `segment${highlight ? " highlight" : ""}` },
      h("h4", {}, ordinal > 1 || segment.id === "OBX" ? `${segment.id} ${ordinal}` : segment.id,
        highlight ? h("span", { class: "here", text: "the value you opened" }) : null),
      h("table", {}, h("tbody", {}, rows))));
  }
  return root;
}
