// A member's own microphone as a caption source, in one of three modes
// (docs/transcription.md), on the captions page and behind the room page's "Advanced"
// disclosure (templates/transcription/_caption_mic.html):
// - proxy: PCM16 to Parley's /v1/realtime, which transcribes and shares the words;
// - websocket: PCM16 straight to the Realtime API with an ephemeral key;
// - webrtc: the microphone track straight to the Realtime API, events on `oai-events`.
// In the direct modes with OpenAI only this page sees the words, so it relays them to the
// room (CaptionRelay); the mint's `relay_captions` says when.
import { CaptionRelay } from "./caption-reports.js";
import { MicrophoneCapture } from "./pcm-capture.js";
import { RealtimeCall } from "./realtime-webrtc.js";
import {
  CLOSE_FORBIDDEN, CLOSE_TOO_MANY, CLOSE_UNAUTHORIZED, CLOSE_UPSTREAM_FAILED, RealtimeSocket,
  ServerEvent, mintKey,
} from "./realtime-protocol.js";

// Close codes after which reconnecting cannot help.
// (Each comes after an `error` event that says why, shown as it arrives.)
const FATAL_CLOSES = new Set([CLOSE_UNAUTHORIZED, CLOSE_UPSTREAM_FAILED, CLOSE_FORBIDDEN,
                              CLOSE_TOO_MANY]);
const AUDIO_CONSTRAINTS = {
  channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false,
};

// Wires the partial's controls (#mic, #mic-status, #mic-error, input[name=mode]); returns the
// session state (for browser tests).
export function mountCaptionMic(slug, csrfToken) {
  const micButton = document.getElementById("mic");
  const micStatus = document.getElementById("mic-status");
  const micError = document.getElementById("mic-error");
  const modeInputs = [...document.querySelectorAll("input[name=mode]")];

  // One microphone session at a time; `source` is the live connection (socket or call).
  const mic = { wanted: false, mode: "proxy", source: null, capture: null, stream: null,
                relay: null, retryTimer: null, attempt: 0 };

  function setMic(state, label) {
    micStatus.dataset.state = state;
    micStatus.textContent = label;
  }

  function showError(message, code = "") {
    micError.hidden = false;
    micError.textContent = message;
    micError.dataset.code = code;
  }

  function selectedMode() {
    return modeInputs.find((input) => input.checked)?.value || "proxy";
  }

  async function connect() {
    clearTimeout(mic.retryTimer);
    let key;
    try {
      key = await mintKey(slug, mic.mode, csrfToken);
    } catch (error) {
      showError(`Could not get a transcription key: ${error.message}`, error.code);
      return scheduleRetry();
    }
    if (!mic.wanted) return undefined;
    if (key.relay_captions && !mic.relay) {
      mic.relay = new CaptionRelay(slug, {
        onError: (event) => showError(`Captions relay: ${event.message || event.type}`, event.code),
      });
    }
    const source = mic.mode === "webrtc"
      ? new RealtimeCall(key.calls_url, key.value)
      : new RealtimeSocket(key.websocket_url, key.value);
    source.everOpened = false;
    mic.source = source;
    source.addEventListener("event", ({ detail: { event } }) => onServerEvent(event));
    source.addEventListener("state", ({ detail }) => onSourceState(source, detail));
    if (mic.mode === "webrtc") {
      try {
        await source.open(mic.stream);
      } catch (error) {
        showError(`The transcription service refused the call: ${error.message}`, error.code);
        return stopMic(false);
      }
    } else {
      source.open();
    }
    return undefined;
  }

  function scheduleRetry() {
    if (!mic.wanted) return;
    const delay = Math.min(15000, 500 * 2 ** mic.attempt++);
    setMic("reconnecting", "reconnecting…");
    mic.retryTimer = setTimeout(connect, delay);
  }

  function onSourceState(source, { state, code }) {
    if (source !== mic.source) return;
    if (state === "open") {
      source.everOpened = true;
      return;
    }
    if (state !== "closed" || !mic.wanted) return;
    mic.source = null;
    if (FATAL_CLOSES.has(code)) {
      stopMic(false);
    } else if (!source.everOpened) {
      // Refused at the handshake (browsers do not say why): most likely the key.
      showError("The transcription service refused the connection: the key has expired or "
                + "is not valid.", "connection_refused");
      stopMic(false);
    } else {
      scheduleRetry();
    }
  }

  function onServerEvent(event) {
    mic.relay?.report(event);
    switch (event.type) {
      case ServerEvent.SESSION_CREATED:
        mic.attempt = 0;
        setMic("listening", "listening");
        break;
      case ServerEvent.SPEECH_STARTED:
        setMic("hearing", "hearing you");
        break;
      case ServerEvent.SPEECH_STOPPED:
        setMic("listening", "listening");
        break;
      case ServerEvent.ERROR:
        showError(event.error?.message || "transcription error", event.error?.code);
        break;
      default:
        break;
    }
  }

  async function startMic() {
    mic.wanted = true;
    mic.mode = selectedMode();
    micError.hidden = true;
    modeInputs.forEach((input) => { input.disabled = true; });
    micButton.setAttribute("aria-pressed", "true");
    micButton.textContent = "Stop captioning me";
    setMic("starting", "starting…");
    try {
      if (mic.mode === "webrtc") {
        mic.stream = await navigator.mediaDevices.getUserMedia({ audio: AUDIO_CONSTRAINTS });
      } else {
        mic.capture = new MicrophoneCapture((chunk) => mic.source?.appendAudio(chunk));
        await mic.capture.start();
      }
    } catch (error) {
      showError(`Microphone unavailable: ${error.message}`, "microphone");
      stopMic(false);
      return;
    }
    await connect();
  }

  function stopMic(clearError = true) {
    mic.wanted = false;
    clearTimeout(mic.retryTimer);
    mic.capture?.stop();
    mic.stream?.getTracks().forEach((track) => track.stop());
    mic.source?.close();
    mic.relay?.close();
    Object.assign(mic, { capture: null, stream: null, source: null, relay: null, attempt: 0 });
    modeInputs.forEach((input) => { input.disabled = false; });
    micButton.setAttribute("aria-pressed", "false");
    micButton.textContent = "Caption my microphone";
    setMic("off", "microphone off");
    if (clearError) micError.hidden = true;
  }

  micButton.addEventListener("click", () => (mic.wanted ? stopMic() : startMic()));
  return mic;
}
