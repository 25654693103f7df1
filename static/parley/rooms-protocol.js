// The room socket's protocol, mirroring rooms/protocol.py (docs/protocol.md), and a client
// that keeps a room's chat whole across reconnects: messages are applied strictly in seq
// order, gaps are fetched with chat.sync, and unacknowledged sends are re-sent with the same
// client_id (the server stores each client_id once).

export const CLOSE_FORBIDDEN = 4403;
export const CLOSE_NOT_FOUND = 4404;
export const CLOSE_SLOW_READER = 4408; // fell too far behind reading: reconnect and resume
export const CLOSE_FLOOD = 4429;
export const CLOSE_TOO_MANY = 4430;
export const CLOSE_TRY_AGAIN = 4503; // the server could not admit us right now: reconnect
export const TERMINAL_CLOSE_CODES = new Set([CLOSE_FORBIDDEN, CLOSE_NOT_FOUND]);

export const ErrorCode = Object.freeze({
  BAD_JSON: "bad_json",
  BAD_FRAME: "bad_frame",
  BINARY_NOT_SUPPORTED: "binary_not_supported",
  FRAME_TOO_LARGE: "frame_too_large",
  UNKNOWN_TYPE: "unknown_type",
  MISSING_FIELD: "missing_field",
  INVALID_FIELD: "invalid_field",
  TEXT_TOO_LONG: "text_too_long",
  RATE_LIMITED: "rate_limited",
  SERVER_ERROR: "server_error",
  TOO_DEEP: "too_deep",
  BAD_TEXT: "bad_text",
});

export const MAX_TEXT_CHARS = 4000;
// Reconnect back-off: 1 s, doubling to 30 s, with jitter so a restarted server is not stormed.
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 30000;
// A gap in seq is usually a broadcast still in flight from another process; give it this long
// before asking the server for the missing messages.
const GAP_GRACE_MS = 700;

export function newClientId() {
  return crypto.randomUUID();
}

export function roomSocketUrl(slug, after, loc = window.location) {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  const query = after === null || after === undefined ? "" : `?after=${after}`;
  return `${scheme}//${loc.host}/ws/rooms/${encodeURIComponent(slug)}/${query}`;
}

// Events dispatched: "state" {state, retryInSeconds}, "hello" {hello}, "reset",
// "message" {message}, "presence" {participants}, "ack" {clientId, seq},
// "pending" {pending}, "error" {error}, "caption" {caption}, "caption-error" {error},
// "assistant" {event} (assistant.* events, static/parley/assistant-panel.js).
export class RoomClient extends EventTarget {
  constructor(slug, { storage = window.sessionStorage } = {}) {
    super();
    this.slug = slug;
    this.storage = storage;
    this.outboxKey = `parley.outbox.${slug}`;
    this.lastSeq = null; // highest seq applied in order
    this.buffered = new Map(); // seq -> message that arrived ahead of a gap
    this.presence = new Map(); // participant id -> {id, name}
    this.outbox = this.loadOutbox(); // client_id -> {client_id, text}
    this.socket = null;
    this.state = "connecting";
    this.attempt = 0;
    this.timers = new Set();
    this.heartbeatSeconds = 15;
    this.stopped = false;
  }

  start() {
    window.addEventListener("online", () => this.reconnectNow());
    window.addEventListener("offline", () => this.setState("offline"));
    this.connect();
  }

  stop() {
    this.stopped = true;
    this.clearTimers();
    if (this.socket) this.socket.close(1000);
  }

  // --- sending -------------------------------------------------------------------------
  send(text) {
    // A lone surrogate (half an emoji from a bad paste) is not Unicode: the server refuses
    // it (bad_text), so send U+FFFD in its place, as the browser would when encoding UTF-8.
    const item = { client_id: newClientId(), text: text.toWellFormed ? text.toWellFormed() : text };
    this.outbox.set(item.client_id, item);
    this.saveOutbox();
    this.transmit(item);
    return item.client_id;
  }

  transmit(item) {
    if (this.state === "live") {
      this.socket.send(JSON.stringify({ type: "chat.send", ...item }));
    }
  }

  loadOutbox() {
    try {
      const items = JSON.parse(this.storage.getItem(this.outboxKey) || "[]");
      return new Map(items.map((item) => [item.client_id, item]));
    } catch {
      return new Map();
    }
  }

  saveOutbox() {
    this.storage.setItem(this.outboxKey, JSON.stringify([...this.outbox.values()]));
    this.emit("pending", { pending: [...this.outbox.values()] });
  }

  // --- connection ----------------------------------------------------------------------
  connect() {
    if (this.stopped) return;
    this.clearTimers();
    this.setState(this.attempt === 0 ? "connecting" : "reconnecting", 0);
    const socket = new WebSocket(roomSocketUrl(this.slug, this.lastSeq));
    this.socket = socket;
    socket.onmessage = (event) => {
      if (this.socket === socket) this.onFrame(event.data);
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.onClose(event.code);
    };
  }

  reconnectNow() {
    if (this.stopped || this.state === "live") return;
    // The old socket may still be open (an offline/online blip need not break it): close it,
    // or it stays connected (and present) beside the new one.
    if (this.socket) {
      this.socket.onclose = null;
      this.socket.close(1000);
    }
    this.connect();
  }

  onClose(code) {
    this.clearTimers();
    if (this.stopped) return;
    if (TERMINAL_CLOSE_CODES.has(code)) {
      this.setState("offline");
      this.emit("error", {
        error: { code: code === CLOSE_NOT_FOUND ? "room_not_found" : "forbidden", message:
          code === CLOSE_NOT_FOUND ? "This room does not exist." : "You are not allowed in this room." },
      });
      return;
    }
    if (!navigator.onLine) {
      this.setState("offline");
      return;
    }
    this.attempt += 1;
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (this.attempt - 1));
    const delay = Math.round(base * (0.5 + Math.random() * 0.5));
    let remaining = Math.ceil(delay / 1000);
    this.setState("reconnecting", remaining);
    const tick = setInterval(() => {
      remaining -= 1;
      if (remaining > 0) this.setState("reconnecting", remaining);
    }, 1000);
    this.timers.add(tick);
    this.later(() => this.connect(), delay);
  }

  watchdog() {
    // No frame for 2.5 heartbeats: the connection is dead even if the browser has not noticed.
    clearTimeout(this.watchdogTimer);
    this.watchdogTimer = setTimeout(() => {
      if (this.socket && this.state === "live") this.socket.close(4000);
    }, this.heartbeatSeconds * 2500);
  }

  // --- receiving -----------------------------------------------------------------------
  onFrame(raw) {
    let event;
    try {
      event = JSON.parse(raw);
    } catch {
      return;
    }
    this.watchdog();
    this.onEvent(event);
  }

  // One server event. A "batch" carries several, in order: a server that is behind sends
  // them in one frame (docs/protocol.md, "batch").
  onEvent(event) {
    switch (event.type) {
      case "batch":
        for (const inner of Array.isArray(event.events) ? event.events : []) {
          if (inner && inner.type !== "batch") this.onEvent(inner);
        }
        return undefined;
      case "hello": return this.onHello(event);
      case "chat.message": return this.onMessage(event);
      case "chat.backlog": return this.onBacklog(event);
      case "chat.ack": return this.onAck(event);
      case "presence": return this.onPresence(event);
      case "heartbeat": return this.onHeartbeat(event);
      case "error": return this.onError(event);
      case "caption": return this.emit("caption", { caption: event });
      case "caption.error": return this.emit("caption-error", { error: event });
      case "assistant.state":
      case "assistant.delta":
      case "assistant.done":
      case "assistant.tool":
      case "assistant.error": return this.emit("assistant", { event }); // assistant-panel.js
      default: return undefined; // newer server, older client: ignore unknown events
    }
  }

  onHello(hello) {
    this.attempt = 0;
    this.heartbeatSeconds = hello.heartbeat_seconds || 15;
    this.presence = new Map(hello.presence.map((p) => [p.id, p]));
    this.emit("hello", { hello });
    this.applyBacklog(hello);
    this.emitPresence();
    this.setState("live");
    for (const item of this.outbox.values()) this.transmit(item);
  }

  applyBacklog({ messages, seq, reset, more }) {
    if (reset || this.lastSeq === null) {
      this.lastSeq = null;
      this.buffered.clear();
      this.emit("reset", {});
      // A fresh history starts just before its oldest message (or at the room's seq).
      this.lastSeq = messages.length ? messages[0].seq - 1 : seq;
    }
    for (const message of messages) this.onMessage(message);
    // Cut at the server's size budget: ask for the rest right away.
    if (more && this.socket) {
      this.socket.send(JSON.stringify({ type: "chat.sync", after: this.lastSeq }));
    }
  }

  onBacklog(event) {
    this.syncing = false;
    this.applyBacklog(event);
  }

  onMessage(message) {
    if (this.lastSeq === null || message.seq <= this.lastSeq) return; // seen already
    this.buffered.set(message.seq, message);
    while (this.buffered.has(this.lastSeq + 1)) {
      const next = this.buffered.get(this.lastSeq + 1);
      this.buffered.delete(next.seq);
      this.lastSeq = next.seq;
      this.emit("message", { message: next });
    }
    if (this.buffered.size) this.scheduleSync();
  }

  onHeartbeat({ seq }) {
    if (this.lastSeq !== null && seq > this.lastSeq) this.scheduleSync();
  }

  scheduleSync() {
    if (this.syncTimer) return;
    const after = this.lastSeq;
    this.syncTimer = this.later(() => {
      this.syncTimer = null;
      if (this.lastSeq === after && this.state === "live") {
        this.socket.send(JSON.stringify({ type: "chat.sync", after: this.lastSeq }));
      }
    }, GAP_GRACE_MS);
  }

  onAck({ client_id: clientId, seq }) {
    if (this.outbox.delete(clientId)) this.saveOutbox();
    this.emit("ack", { clientId, seq });
  }

  onPresence({ joined, left }) {
    for (const p of left) this.presence.delete(p.id);
    for (const p of joined) this.presence.set(p.id, p);
    this.emitPresence();
  }

  onError(error) {
    const item = error.client_id && this.outbox.get(error.client_id);
    if (item && (error.code === ErrorCode.RATE_LIMITED || error.code === ErrorCode.SERVER_ERROR)) {
      // Not stored: try again once the server says we may.
      const wait = Math.max(250, (error.retry_after || 1) * 1000);
      this.later(() => this.transmit(item), wait);
    } else if (item) {
      // Refused for good (too long, invalid): keep it out of the outbox.
      this.outbox.delete(error.client_id);
      this.saveOutbox();
    }
    this.emit("error", { error });
  }

  // --- helpers -------------------------------------------------------------------------
  emitPresence() {
    const participants = [...this.presence.values()].sort((a, b) => a.name.localeCompare(b.name));
    this.emit("presence", { participants });
  }

  setState(state, retryInSeconds = 0) {
    this.state = state;
    this.emit("state", { state, retryInSeconds });
  }

  later(fn, ms) {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      fn();
    }, ms);
    this.timers.add(timer);
    return timer;
  }

  clearTimers() {
    for (const timer of this.timers) {
      clearTimeout(timer);
      clearInterval(timer);
    }
    this.timers.clear();
    this.syncTimer = null;
    clearTimeout(this.watchdogTimer);
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
