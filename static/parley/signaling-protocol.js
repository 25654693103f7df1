// The signaling socket's protocol, mirroring signaling/protocol.py (docs/protocol.md), and a
// client that keeps one place in a direct call: it joins after every (re)connect and hands
// each server event to the page one at a time, in order (a candidate must never be applied
// before the description it belongs to).
import { CLOSE_FORBIDDEN, CLOSE_NOT_FOUND, CLOSE_FLOOD, ErrorCode } from "./rooms-protocol.js";
import { EventSocket } from "./event-socket.js";

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

export function signalSocketUrl(slug, loc = window.location) {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}/ws/signal/${encodeURIComponent(slug)}/`;
}

// `onEvent(event)` is awaited for each event (see EventSocket for the "socket" events).
export class SignalingClient {
  constructor(slug, mode, onEvent) {
    this.mode = mode;
    this.joined = false;
    this.socket = new EventSocket(signalSocketUrl(slug), (event) => {
      // A new connection has no place in the call: take it again (it replaces the old one).
      if (event.type === "hello" && this.joined) this.join();
      return onEvent(event);
    }, { terminalCodes: [CLOSE_FORBIDDEN, CLOSE_NOT_FOUND, CLOSE_REPLACED] });
  }

  start() {
    this.socket.start();
  }

  send(message) {
    return this.socket.send(message);
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
    this.socket.stop();
  }
}
