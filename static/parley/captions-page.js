// The captions page: everyone's live captions (room socket -> CaptionBoard) and this member's
// microphone as a caption source through Parley's proxy (/v1/realtime with a minted key).
import { RoomClient } from "./rooms-protocol.js";
import { CaptionBoard } from "./captions.js";
import { MicrophoneCapture } from "./pcm-capture.js";
import {
  CLOSE_UNAUTHORIZED, CLOSE_UPSTREAM_FAILED, RealtimeSocket, ServerEvent, mintKey,
} from "./realtime-protocol.js";

const root = document.getElementById("captions-page");
const slug = root.dataset.slug;
const status = document.getElementById("status");
const micButton = document.getElementById("mic");
const micStatus = document.getElementById("mic-status");
const micError = document.getElementById("mic-error");
const csrfToken = document.querySelector("[name=csrfmiddlewaretoken]").value;

const board = new CaptionBoard(document.getElementById("captions"), slug);
const room = new RoomClient(slug);
room.addEventListener("caption", ({ detail }) => board.onCaption(detail.caption));
room.addEventListener("caption-error", ({ detail }) => board.onError(detail.error));
room.addEventListener("state", ({ detail: { state } }) => {
  status.dataset.state = state;
  status.textContent = state;
});
board.loadRecent();
room.start();

// Codes after which reconnecting cannot help.
const FATAL_CLOSES = new Set([CLOSE_UNAUTHORIZED, CLOSE_UPSTREAM_FAILED]);
let socket = null;
let capture = null;
let wanted = false;
let retryTimer = null;
let attempt = 0;

function setMic(state, label) {
  micStatus.dataset.state = state;
  micStatus.textContent = label;
}

function showError(message) {
  micError.hidden = false;
  micError.textContent = message;
}

async function connectSocket() {
  clearTimeout(retryTimer);
  let key;
  try {
    key = await mintKey(slug, "proxy", csrfToken);
  } catch (error) {
    showError(`Could not start captions: ${error.message}`);
    return scheduleRetry();
  }
  socket = new RealtimeSocket(key.websocket_url, key.value);
  socket.addEventListener("event", ({ detail: { event } }) => onServerEvent(event));
  socket.addEventListener("state", ({ detail }) => onSocketState(detail));
  socket.open();
  return undefined;
}

function scheduleRetry() {
  if (!wanted) return;
  const delay = Math.min(15000, 500 * 2 ** attempt++);
  setMic("reconnecting", "reconnecting…");
  retryTimer = setTimeout(connectSocket, delay);
}

function onSocketState({ state, code }) {
  if (state === "open") return;
  if (state === "closed" && wanted) {
    if (FATAL_CLOSES.has(code)) {
      stopMic(false);
      return;
    }
    scheduleRetry();
  }
}

function onServerEvent(event) {
  switch (event.type) {
    case ServerEvent.SESSION_CREATED:
      attempt = 0;
      micError.hidden = true;
      setMic("listening", "listening");
      break;
    case ServerEvent.SPEECH_STARTED:
      setMic("hearing", "hearing you");
      break;
    case ServerEvent.SPEECH_STOPPED:
      setMic("listening", "listening");
      break;
    case ServerEvent.ERROR:
      showError(event.error?.message || "transcription error");
      micError.dataset.code = event.error?.code || "";
      break;
    default:
      break;
  }
}

async function startMic() {
  wanted = true;
  micButton.setAttribute("aria-pressed", "true");
  micButton.textContent = "Stop captioning me";
  setMic("starting", "starting…");
  capture = new MicrophoneCapture((chunk) => socket?.appendAudio(chunk));
  try {
    await capture.start();
  } catch (error) {
    showError(`Microphone unavailable: ${error.message}`);
    stopMic(false);
    return;
  }
  await connectSocket();
}

function stopMic(clearError = true) {
  wanted = false;
  clearTimeout(retryTimer);
  capture?.stop();
  capture = null;
  socket?.close();
  socket = null;
  micButton.setAttribute("aria-pressed", "false");
  micButton.textContent = "Caption my microphone";
  setMic("off", "microphone off");
  if (clearError) micError.hidden = true;
}

micButton.addEventListener("click", () => (wanted ? stopMic() : startMic()));
window.parleyCaptions = { board, room }; // for debugging and browser tests
