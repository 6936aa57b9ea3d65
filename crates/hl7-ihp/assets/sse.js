// The event stream, read with fetch() because EventSource cannot send the Authorization
// header: a server-sent events parser (the WHATWG rules) and a connection that reconnects
// with Last-Event-ID.

/**
 * Turns text, in chunks as they arrive, into events `{id, event, data}`. Lines end with
 * CRLF, LF or CR (a CR at a chunk's end may be half of a CRLF); a blank line dispatches;
 * `:` starts a comment; `id` persists across events; `retry` sets the reconnection delay.
 */
const LINE_END = /\r\n|\r|\n/;

export class SseParser {
  constructor() {
    this.buffer = "";
    this.data = [];
    this.type = "";
    this.lastId = "";
    this.retry = null;
    this.pendingCr = false;
    this.first = true;
  }

  /** Feeds text; returns the events it completed. */
  push(text) {
    if (this.first && text.length > 0) {
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
      this.first = false;
    }
    if (this.pendingCr && text.startsWith("\n")) text = text.slice(1);
    this.pendingCr = false;
    // The native split finds the line ends; a stream carries megabytes a second.
    const lines = (this.buffer + text).split(LINE_END);
    this.buffer = lines.pop();
    if (this.buffer === "" && text.endsWith("\r")) this.pendingCr = true;
    const events = [];
    for (const line of lines) this.line(line, events);
    return events;
  }

  line(line, events) {
    if (line === "") {
      if (this.data.length > 0) {
        events.push({ id: this.lastId, event: this.type || "message", data: this.data.join("\n") });
      }
      this.data = [];
      this.type = "";
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.type = value;
    else if (field === "id") {
      if (!value.includes("\0")) this.lastId = value;
    } else if (field === "retry") {
      if (/^\d+$/.test(value)) this.retry = Number(value);
    }
  }
}

// The server sends a comment every 15 s; silence for this long means a dead connection.
const SILENCE_MS = 40_000;
const MAX_BACKOFF_MS = 15_000;

/**
 * Follows `url` until `stop()`: calls `onEvent({id, event, data})` with the data as text,
 * and `onState("live" | "connecting" | "down")`. `headers()` gives the auth header;
 * `onUnauthorized()` resolves when a new token was entered. The body is read only once
 * `ready()` has resolved: until then what arrives waits in the browser's buffers, so the
 * first paint does not share the main thread with the stream.
 */
export class EventStream {
  constructor(url, { onEvent, onState, headers, onUnauthorized, ready = () => Promise.resolve() }) {
    this.ready = ready;
    this.url = url;
    this.onEvent = onEvent;
    this.onState = onState;
    this.headers = headers;
    this.onUnauthorized = onUnauthorized;
    this.lastId = "";
    this.retry = 1000;
    this.stopped = false;
    this.controller = null;
  }

  start() {
    this.loop();
    return this;
  }

  stop() {
    this.stopped = true;
    if (this.controller) this.controller.abort();
  }

  async loop() {
    let failures = 0;
    while (!this.stopped) {
      this.onState(failures > 0 ? "down" : "connecting");
      let gotEvent = false;
      try {
        gotEvent = await this.once();
      } catch (error) {
        if (this.stopped) return;
        if (error && error.unauthorized) {
          await this.onUnauthorized();
          continue;
        }
      }
      if (this.stopped) return;
      failures = gotEvent ? 1 : failures + 1;
      this.onState("down");
      const delay = Math.min(MAX_BACKOFF_MS, this.retry * 2 ** Math.max(0, failures - 1));
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }

  // One connection, until it ends; true when it delivered anything.
  async once() {
    const controller = new AbortController();
    this.controller = controller;
    const headers = { Accept: "text/event-stream", ...this.headers() };
    if (this.lastId) headers["Last-Event-ID"] = this.lastId;
    let silence = setTimeout(() => controller.abort(), SILENCE_MS);
    try {
      const response = await fetch(this.url, { headers, signal: controller.signal, cache: "no-store" });
      if (response.status === 401) throw Object.assign(new Error("unauthorized"), { unauthorized: true });
      if (!response.ok || !response.body) return false;
      this.onState("live");
      clearTimeout(silence);
      await this.ready();
      silence = setTimeout(() => controller.abort(), SILENCE_MS);
      const parser = new SseParser();
      const decoder = new TextDecoder();
      const reader = response.body.getReader();
      let delivered = false;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        clearTimeout(silence);
        silence = setTimeout(() => controller.abort(), SILENCE_MS);
        for (const event of parser.push(decoder.decode(value, { stream: true }))) {
          if (parser.retry !== null) this.retry = parser.retry;
          this.lastId = event.id;
          delivered = true;
          try {
            this.onEvent(event);
          } catch (error) {
            // A view's bug must not end the stream for the others.
            console.error(error);
          }
        }
      }
      return delivered;
    } finally {
      clearTimeout(silence);
      this.controller = null;
    }
  }
}
