// The group call socket's protocol, mirroring signaling/sfu/protocol.py (docs/protocol.md).
import { CLOSE_FORBIDDEN, CLOSE_NOT_FOUND } from "./rooms-protocol.js";
import { EventSocket } from "./event-socket.js";

export const SfuError = Object.freeze({
  NOT_JOINED: "not_joined",
  ALREADY_JOINED: "already_joined",
  WORKER_UNAVAILABLE: "worker_unavailable",
});
export const TARGETS = ["publish", "subscribe"];

export function sfuSocketUrl(slug, loc = window.location) {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}/ws/sfu/${encodeURIComponent(slug)}/`;
}

// The group call socket: server events (and "socket" events) reach `onEvent` in order.
export function sfuSocket(slug, onEvent) {
  return new EventSocket(sfuSocketUrl(slug), onEvent,
                         { terminalCodes: [CLOSE_FORBIDDEN, CLOSE_NOT_FOUND] });
}
