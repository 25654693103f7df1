// The OpenAI Realtime API's transcription protocol as Parley speaks it (mirrors
// transcription/realtime.py and engines.py; docs/transcription.md), and a client for its
// WebSocket: the same code talks to Parley's proxy (/v1/realtime) and to OpenAI directly
// with an ephemeral key.

export const KEY_PROTOCOL_PREFIX = "openai-insecure-api-key.";
export const CLOSE_UNAUTHORIZED = 4401;
export const CLOSE_UPSTREAM_FAILED = 4502;
export const CLOSE_FORBIDDEN = 4403; // access to the room was taken away
export const CLOSE_TOO_MANY = 4430; // this member already has as many sessions as allowed
export const MIN_COMMIT_MS = 100;

export const ServerEvent = Object.freeze({
  SESSION_CREATED: "session.created",
  SESSION_UPDATED: "session.updated",
  SPEECH_STARTED: "input_audio_buffer.speech_started",
  SPEECH_STOPPED: "input_audio_buffer.speech_stopped",
  COMMITTED: "input_audio_buffer.committed",
  CLEARED: "input_audio_buffer.cleared",
  DELTA: "conversation.item.input_audio_transcription.delta",
  COMPLETED: "conversation.item.input_audio_transcription.completed",
  FAILED: "conversation.item.input_audio_transcription.failed",
  ERROR: "error",
});

export const ErrorCode = Object.freeze({
  INVALID_JSON: "invalid_json",
  MISSING_REQUIRED_PARAMETER: "missing_required_parameter",
  UNKNOWN_EVENT_TYPE: "unknown_event_type",
  INVALID_BASE64: "invalid_base64",
  INVALID_AUDIO_LENGTH: "invalid_audio_length",
  AUDIO_TOO_LARGE: "audio_too_large",
  UNSUPPORTED_AUDIO_FORMAT: "unsupported_audio_format",
  INVALID_VALUE: "invalid_value",
  COMMIT_EMPTY: "input_audio_buffer_commit_empty",
  INVALID_API_KEY: "invalid_api_key",
  SESSION_EXPIRED: "session_expired",
  UPSTREAM_AUTH_FAILED: "upstream_auth_failed",
  UPSTREAM_QUOTA: "upstream_quota_exceeded",
  UPSTREAM_UNAVAILABLE: "upstream_unavailable",
  UPSTREAM_LOST: "upstream_connection_lost",
});

export function appendEvent(pcm16Buffer) {
  const bytes = new Uint8Array(pcm16Buffer);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return { type: "input_audio_buffer.append", audio: btoa(binary) };
}

export function transcriptionSession({ model, language, turnDetection } = {}) {
  const input = { format: { type: "audio/pcm", rate: 24000 } };
  if (model) input.transcription = { model, ...(language ? { language } : {}) };
  if (turnDetection !== undefined) input.turn_detection = turnDetection;
  return { type: "transcription", audio: { input } };
}

// Mint a short-lived key for `room` (POST /api/transcription-session, CSRF-protected).
export async function mintKey(room, mode, csrfToken) {
  const reply = await fetch("/api/transcription-session", {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken },
    body: JSON.stringify({ room, mode }),
    credentials: "same-origin",
  });
  const body = await reply.json().catch(() => ({}));
  if (!reply.ok) {
    const error = new Error(body.error?.message || `key refused (HTTP ${reply.status})`);
    error.code = body.error?.code || `http_${reply.status}`;
    throw error;
  }
  return body;
}

// A connection to a Realtime endpoint, whatever the transport. Events dispatched: "event"
// {event} for every server event, "state" {state, code, reason} with state
// "connecting" | "open" | "closed".
export class RealtimeConnection extends EventTarget {
  // A server event as it arrived (JSON text); anything else is ignored.
  receive(data) {
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      return;
    }
    this.emit("event", { event });
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

// The Realtime WebSocket (Parley's /v1/realtime or OpenAI's), key as a subprotocol.
export class RealtimeSocket extends RealtimeConnection {
  constructor(url, key, { session = null } = {}) {
    super();
    this.url = url;
    this.key = key;
    this.session = session;
    this.socket = null;
  }

  open() {
    const protocols = ["realtime"];
    if (this.key) protocols.push(KEY_PROTOCOL_PREFIX + this.key);
    this.emit("state", { state: "connecting" });
    const socket = new WebSocket(this.url, protocols);
    this.socket = socket;
    socket.onopen = () => {
      if (this.session) this.send({ type: "session.update", session: this.session });
      this.emit("state", { state: "open" });
    };
    socket.onmessage = ({ data }) => this.receive(data);
    socket.onclose = ({ code, reason }) => {
      if (this.socket === socket) this.socket = null;
      this.emit("state", { state: "closed", code, reason });
    };
  }

  get isOpen() {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  // Audio is dropped, not queued, when the socket is not open or is backed up by more than
  // a second of audio: live captions prefer a gap to falling behind.
  appendAudio(pcm16Buffer) {
    if (!this.isOpen || this.socket.bufferedAmount > 64000) return false;
    this.send(appendEvent(pcm16Buffer));
    return true;
  }

  send(event) {
    if (this.isOpen) this.socket.send(JSON.stringify(event));
  }

  close() {
    this.socket?.close(1000);
  }
}
