// The signaling socket's protocol, mirroring signaling/protocol.py (docs/protocol.md,
// docs/signaling.md): a connection is a participant; invitations and the WebRTC relay name a
// call id. The client hands each server event to its owner one at a time, in order (a
// candidate must never be applied before the description it belongs to).
import { CLOSE_FORBIDDEN, CLOSE_NOT_FOUND, CLOSE_FLOOD, ErrorCode } from "./rooms-protocol.js";
import { EventSocket } from "./event-socket.js";

export { CLOSE_FORBIDDEN, CLOSE_NOT_FOUND, CLOSE_FLOOD, ErrorCode };
export const MODES = ["chat", "video"];
export const SignalError = Object.freeze({
  NOT_HERE: "not_here",
  SELF_CALL: "self_call",
  BUSY: "busy",
  TOO_MANY_CALLS: "too_many_calls",
  TOO_MANY_INVITES: "too_many_invites",
  DUPLICATE_CALL: "duplicate_call",
  UNKNOWN_CALL: "unknown_call",
  NOT_YOUR_CALL: "not_your_call",
  NOT_RINGING: "not_ringing",
  NOT_ACCEPTED: "not_accepted",
  SDP_TOO_LARGE: "sdp_too_large",
});
// `call-ended` reasons.
export const EndReason = Object.freeze({
  DECLINED: "declined",
  CANCELLED: "cancelled",
  TIMEOUT: "timeout",
  HUNG_UP: "hung-up",
  GONE: "gone",
  ANSWERED_ELSEWHERE: "answered-elsewhere",
});

export function signalSocketUrl(slug, loc = window.location) {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}/ws/signal/${encodeURIComponent(slug)}/`;
}

// `onEvent(event)` is awaited for each event (see EventSocket for the "socket" events). After
// a reconnect the server has ended every call of the old connection (`gone` on the other side).
export class SignalingClient {
  constructor(slug, onEvent) {
    this.socket = new EventSocket(signalSocketUrl(slug), onEvent,
      { terminalCodes: [CLOSE_FORBIDDEN, CLOSE_NOT_FOUND] });
  }

  start() {
    this.socket.start();
  }

  send(message) {
    return this.socket.send(message);
  }

  invite(to, mode, clientId) {
    return this.send({ type: "invite", to, mode, client_id: clientId });
  }

  accept(call) {
    return this.send({ type: "accept", call });
  }

  decline(call) {
    return this.send({ type: "decline", call });
  }

  cancel(call) {
    return this.send({ type: "cancel", call });
  }

  hangUp(call) {
    return this.send({ type: "hang-up", call });
  }

  offer(call, sdp) {
    return this.send({ type: "offer", call, sdp });
  }

  answer(call, sdp) {
    return this.send({ type: "answer", call, sdp });
  }

  candidate(call, candidate) {
    return this.send({ type: "ice-candidate", call, candidate });
  }

  stop() {
    this.socket.stop();
  }
}
