// The group call socket's protocol, mirroring signaling/sfu/protocol.py (docs/protocol.md).
import { CLOSE_FORBIDDEN, CLOSE_NOT_FOUND } from "./rooms-protocol.js";
import { EventSocket } from "./event-socket.js";

export const SfuError = Object.freeze({
  NOT_JOINED: "not_joined",
  ALREADY_JOINED: "already_joined",
  WORKER_UNAVAILABLE: "worker_unavailable",
  // From the worker, with `command` (the client message they answer).
  SFU_FAILED: "sfu_failed",
  CALL_FULL: "call_full",
  CALL_BUSY: "call_busy",
  TOO_MANY_TRACKS: "too_many_tracks",
  PUBLISH_FAILED: "publish_failed",
  ANSWER_FAILED: "answer_failed",
  SUBSCRIBE_LOST: "subscribe_lost",
  NO_SCREEN_SECTION: "no_screen_section", // share {on: true} before publishing a screen section
});
// Server events asking the client to rebuild one of its two connections.
export const SfuEvent = Object.freeze({
  SUBSCRIBE_LOST: "subscribe-lost", // fresh subscribe connection, then send "resubscribe"
  PUBLISH_LOST: "publish-lost", // fresh publish connection, then "publish" its offer
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
