// The group call socket's protocol, mirroring signaling/sfu/protocol.py (docs/protocol.md),
// and a client that stays connected: it reconnects with back-off and hands each server event
// to the page one at a time, in order.
import { CLOSE_FORBIDDEN, CLOSE_NOT_FOUND } from "./rooms-protocol.js";

export const SfuError = Object.freeze({
  NOT_JOINED: "not_joined",
  ALREADY_JOINED: "already_joined",
  WORKER_UNAVAILABLE: "worker_unavailable",
});
export const TARGETS = ["publish", "subscribe"];

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;

export function sfuSocketUrl(slug, loc = window.location) {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}/ws/sfu/${encodeURIComponent(slug)}/`;
}

// `onEvent(event)` is awaited per event. Besides the server's events it receives
// {type: "socket", state: "open"|"closed", code, retryInSeconds}.
export class SfuClient {
  constructor(slug, onEvent) {
    this.slug = slug;
    this.onEvent = onEvent;
    this.queue = Promise.resolve();
    this.attempt = 0;
    this.stopped = false;
  }

  start() {
    if (this.stopped) return;
    const socket = new WebSocket(sfuSocketUrl(this.slug));
    this.socket = socket;
    socket.onopen = () => {
      this.attempt = 0;
    };
    socket.onmessage = (message) => {
      try {
        this.deliver(JSON.parse(message.data));
      } catch (error) {
        console.warn("bad frame from server", error);
      }
    };
    socket.onclose = (event) => {
      if (this.socket !== socket || this.stopped) return;
      if ([CLOSE_FORBIDDEN, CLOSE_NOT_FOUND].includes(event.code)) {
        this.stopped = true;
        this.deliver({ type: "socket", state: "closed", code: event.code, retryInSeconds: null });
        return;
      }
      this.attempt += 1;
      const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (this.attempt - 1));
      this.deliver({ type: "socket", state: "closed", code: event.code,
                     retryInSeconds: Math.ceil(delay / 1000) });
      setTimeout(() => this.start(), delay);
    };
  }

  deliver(event) {
    this.queue = this.queue.then(() => this.onEvent(event)).catch((error) => {
      console.error("group call event failed", event.type, error);
    });
  }

  send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(message));
      return true;
    }
    return false;
  }
}
