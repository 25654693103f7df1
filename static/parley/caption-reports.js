// Client-reported captions (mirrors transcription/reports.py; docs/protocol.md): in the
// browser-direct modes only this page sees OpenAI's transcript events, so it relays them to
// ws/captions/<slug>/, where they become the room's shared, stored captions.
import { CLOSE_FORBIDDEN, CLOSE_NOT_FOUND } from "./rooms-protocol.js";
import { EventSocket } from "./event-socket.js";

export const CLOSE_REPLACED = 4409;
export const REPORTED_TYPES = new Set([
  "input_audio_buffer.speech_started",
  "input_audio_buffer.speech_stopped",
  "input_audio_buffer.committed",
  "conversation.item.input_audio_transcription.delta",
  "conversation.item.input_audio_transcription.completed",
  "conversation.item.input_audio_transcription.failed",
]);
const REPORTED_FIELDS = ["type", "item_id", "previous_item_id", "audio_start_ms",
  "audio_end_ms", "delta", "transcript"];

export function captionsSocketUrl(slug, loc = window.location) {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}/ws/captions/${encodeURIComponent(slug)}/`;
}

// Relays transcript events; events made while the socket is down wait (a few hundred at
// most) and go out in order once it is back. `onStored(itemId)` hears acknowledgements.
export class CaptionRelay {
  constructor(slug, { onStored = () => {}, onError = () => {} } = {}) {
    this.pending = [];
    this.open = false;
    this.socket = new EventSocket(captionsSocketUrl(slug), (event) => this.onEvent(event), {
      terminalCodes: [CLOSE_FORBIDDEN, CLOSE_NOT_FOUND, CLOSE_REPLACED],
    });
    this.onStored = onStored;
    this.onError = onError;
    this.socket.start();
  }

  report(event) {
    if (!REPORTED_TYPES.has(event.type)) return;
    const frame = {};
    for (const field of REPORTED_FIELDS) if (field in event) frame[field] = event[field];
    if (this.open && this.socket.send(frame)) return;
    if (this.pending.length < 500) this.pending.push(frame);
  }

  onEvent(event) {
    if (event.type === "socket") {
      this.open = false;
      return;
    }
    if (event.type === "hello") {
      this.open = true;
      for (const frame of this.pending.splice(0)) this.socket.send(frame);
    } else if (event.type === "caption.stored") {
      this.onStored(event.item_id);
    } else if (event.type === "error" || event.type === "replaced") {
      this.onError(event);
    }
  }

  close() {
    this.socket.stop();
  }
}
