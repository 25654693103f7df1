// The signaling socket's protocol, mirroring signaling/protocol.py (docs/protocol.md), and a
// client that keeps one place in a direct call: it joins after every (re)connect and hands
// each server event to the page one at a time, in order (a candidate must never be applied
// before the description it belongs to).
import { CLOSE_FORBIDDEN, CLOSE_NOT_FOUND, CLOSE_FLOOD, ErrorCode } from "./rooms-protocol.js";

export { CLOSE_FORBIDDEN, CLOSE_NOT_FOUND, CLOSE_FLOOD, ErrorCode };
export const CLOSE_REPLACED = 4409;
export const MODES = ["chat", "video"];
export const SignalError = Object.freeze({
  NOT_JOINED: "not_joined",
  ALREADY_JOINED: "already_joined",
  NO_PEER: "no_peer",
  PEER_GONE: "peer_gone",
  SDP_TOO_LARGE: "sdp_too_large",
});

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;

export function signalSocketUrl(slug, loc = window.location) {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}/ws/signal/${encodeURIComponent(slug)}/`;
}

// `onEvent(event)` is awaited for each server event, one at a time. Events: every server
// message, plus {type: "socket", state: "connecting"|"open"|"closed", code, retryInSeconds}.
export class SignalingClient {
  constructor(slug, mode, onEvent) {
    this.slug = slug;
    this.mode = mode;
    this.onEvent = onEvent;
    this.queue = Promise.resolve();
    this.attempt = 0;
    this.stopped = false;
    this.joined = false;
  }

  start() {
    this.connect();
  }

  connect() {
    if (this.stopped) return;
    this.deliver({ type: "socket", state: "connecting" });
    const socket = new WebSocket(signalSocketUrl(this.slug));
    this.socket = socket;
    socket.onmessage = (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      if (event.type === "hello") {
        this.attempt = 0;
        this.deliver({ type: "socket", state: "open" });
        if (this.joined) this.join();
      }
      this.deliver(event);
    };
    socket.onclose = (event) => {
      if (this.socket !== socket || this.stopped) return;
      const terminal = [CLOSE_FORBIDDEN, CLOSE_NOT_FOUND, CLOSE_REPLACED].includes(event.code);
      if (terminal) {
        this.stopped = true;
        this.deliver({ type: "socket", state: "closed", code: event.code, retryInSeconds: null });
        return;
      }
      this.attempt += 1;
      const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (this.attempt - 1));
      this.deliver({ type: "socket", state: "closed", code: event.code,
                     retryInSeconds: Math.ceil(delay / 1000) });
      setTimeout(() => this.connect(), delay);
    };
  }

  deliver(event) {
    this.queue = this.queue.then(() => this.onEvent(event)).catch((error) => {
      console.error("signaling event failed", event.type, error);
    });
  }

  send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  join() {
    this.joined = true;
    const sent = this.send({ type: "join", mode: this.mode });
    if (sent && this.onJoinSent) this.onJoinSent();
    return sent;
  }

  leave() {
    this.joined = false;
    return this.send({ type: "leave" });
  }

  stop() {
    this.stopped = true;
    if (this.socket) this.socket.close(1000);
  }
}
