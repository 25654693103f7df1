// The group call page: send camera and microphone once to the SFU, receive everyone else's.
// Lifetimes: one SfuClient for the page's life; per join, one publish connection (we offer)
// and one subscribe connection (the server offers), both closed on leave, on worker-lost and
// before every rejoin. Remote tracks are tied to people by transceiver mid, from the
// server's `participants` message.
import { SfuError, SfuEvent, sfuSocket } from "./sfu-protocol.js";
import { RoomClient } from "./rooms-protocol.js";
import { CaptionBoard } from "./captions.js";
import { iceProblemMessage, watchIce } from "./ice-health.js";

const root = document.getElementById("group-call");
const statusEl = document.getElementById("call-status");
const grid = document.getElementById("grid");
const joinButton = document.getElementById("join");
const leaveButton = document.getElementById("leave");
const muteButton = document.getElementById("mute");
const cameraButton = document.getElementById("camera");
const captionsButton = document.getElementById("captions-toggle");
let iceServers = JSON.parse(document.getElementById("ice-servers").textContent);
let iceTransportPolicy = "all"; // "relay": TURN only (ICE_TRANSPORT_POLICY), from hello

// Level above which a participant counts as speaking (getStats audioLevel, 0..1).
const SPEAKING_LEVEL = 0.02;
// A join the server has not confirmed by then is reported, with a retry, not left "Joining…".
const JOIN_TIMEOUT_MS = 15000;

const call = {
  state: "idle",
  wantJoined: true,
  publishPc: null,
  subscribePc: null,
  localStream: null,
  tracksByMid: new Map(),
  participants: [],
  muted: { audio: false, video: false },
  captions: false,
  republished: false,
  joinTimer: null,
};
window.parleyGroup = call; // for debugging and browser tests

function setStatus(state, text) {
  call.state = state;
  statusEl.dataset.state = state;
  statusEl.textContent = text;
}

const client = sfuSocket(root.dataset.slug, onEvent);

async function onEvent(event) {
  switch (event.type) {
    case "socket":
      if (event.state === "connecting") return;
      closeConnections();
      if (event.retryInSeconds === null) setStatus("offline", "You cannot join this call.");
      else setStatus("reconnecting", `Connection lost; reconnecting in ${event.retryInSeconds}s…`);
      return;
    case "hello":
      iceServers = event.ice_servers;
      iceTransportPolicy = event.ice_transport_policy || "all";
      if (call.wantJoined) await join();
      return;
    case "joined":
      clearTimeout(call.joinTimer);
      if (call.state !== "media-failed") setStatus("live", "In the call");
      return;
    case "publish-answer":
      await call.publishPc.setRemoteDescription({ type: "answer", sdp: event.sdp });
      return;
    case "subscribe-offer":
      return answerSubscribeOffer(event.sdp);
    case "participants":
      call.participants = event.participants;
      showCaptionsState(Boolean(event.captions));
      render();
      return;
    case "worker-lost":
      closeConnections();
      setStatus("reconnecting", "The call server restarted; rejoining…");
      if (call.wantJoined) await join();
      return;
    case SfuEvent.SUBSCRIBE_LOST:
      if (call.subscribePc) {
        call.subscribePc.stopIceWatch();
        call.subscribePc.close();
        call.tracksByMid.clear();
        newSubscribeConnection();
        client.send({ type: "resubscribe" });
      }
      return;
    case SfuEvent.PUBLISH_LOST:
      if (call.publishPc) await publish();
      return;
    case "error":
      console.warn("group call error", event.code, event.command, event.message);
      if (event.code === SfuError.WORKER_UNAVAILABLE || event.code === SfuError.CALL_BUSY
          || (event.code === SfuError.SFU_FAILED && event.command === "join")) {
        closeConnections();
        setStatus("unavailable", event.code === SfuError.WORKER_UNAVAILABLE
          ? "The call server is unreachable; retrying…" : "The call server failed; retrying…");
        setTimeout(() => { if (call.wantJoined && call.state === "unavailable") join(); }, 3000);
      } else if (event.code === SfuError.CALL_FULL) {
        closeConnections();
        setStatus("full", "This call is full.");
        leaveButton.hidden = true;
        joinButton.hidden = false;
      } else if (event.code === SfuError.PUBLISH_FAILED && call.publishPc && !call.republished) {
        call.republished = true; // once per join: an offer that always fails must not loop
        await publish();
      } else if (event.command) {
        setStatus(call.state, `The call server refused ${event.command}: ${event.message}`);
      }
      return;
    default:
      return;
  }
}

// Both connections must carry media; whichever fails first says why, and the page offers a
// retry (a fresh join). If it connects after all, the page goes back to "In the call".
function onIceProblem(problem, detail) {
  if (problem) {
    console.warn("group call media", problem, detail);
    offerRetry("media-failed", iceProblemMessage(problem));
  } else if (call.state === "media-failed") {
    setStatus("live", "In the call");
    joinButton.hidden = true;
  }
}

function offerRetry(state, text) {
  setStatus(state, text);
  joinButton.textContent = "Try again";
  joinButton.hidden = false;
}

function newPeerConnection(target) {
  const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy, bundlePolicy: "max-bundle" });
  pc.stopIceWatch = watchIce(pc, { relayOnly: iceTransportPolicy === "relay",
                                   onProblem: onIceProblem });
  pc.onicecandidate = ({ candidate }) => {
    if (candidate && candidate.candidate) {
      client.send({ type: "candidate", target, candidate: candidate.toJSON() });
    }
  };
  return pc;
}

function newSubscribeConnection() {
  call.subscribePc = newPeerConnection("subscribe");
  call.subscribePc.ontrack = ({ track, transceiver }) => {
    call.tracksByMid.set(transceiver.mid, track);
    track.onended = () => call.tracksByMid.delete(transceiver.mid);
    render();
  };
}

// Offer our tracks on a fresh publish connection (also after publish-lost / publish_failed,
// when the server has replaced its side).
async function publish() {
  if (call.publishPc) {
    call.publishPc.stopIceWatch();
    call.publishPc.close();
  }
  call.publishPc = newPeerConnection("publish");
  for (const track of call.localStream.getTracks()) {
    call.publishPc.addTransceiver(track, { direction: "sendonly", streams: [call.localStream] });
  }
  await call.publishPc.setLocalDescription(await call.publishPc.createOffer());
  client.send({ type: "publish", sdp: call.publishPc.localDescription.sdp });
}

async function join() {
  closeConnections();
  setStatus("joining", "Joining…");
  joinButton.hidden = true;
  leaveButton.hidden = false;
  call.joinTimer = setTimeout(() => {
    if (call.state === "joining") offerRetry("failed", "The call server did not answer.");
  }, JOIN_TIMEOUT_MS);
  client.send({ type: "join" });
  call.republished = false;
  newSubscribeConnection();
  await publish();
  if (call.muted.audio || call.muted.video) client.send({ type: "mute", ...call.muted });
}

async function answerSubscribeOffer(sdp) {
  const pc = call.subscribePc;
  if (!pc) return;
  await pc.setRemoteDescription({ type: "offer", sdp });
  await pc.setLocalDescription(await pc.createAnswer());
  client.send({ type: "subscribe-answer", sdp: pc.localDescription.sdp });
}

function closeConnections() {
  clearTimeout(call.joinTimer);
  for (const pc of [call.publishPc, call.subscribePc]) {
    if (pc) {
      pc.stopIceWatch();
      pc.close();
    }
  }
  call.publishPc = null;
  call.subscribePc = null;
  call.tracksByMid.clear();
  call.participants = [];
  render();
}

// --- rendering ----------------------------------------------------------------------------
function tileFor(id) {
  let tile = grid.querySelector(`[data-participant="${CSS.escape(id)}"]`);
  if (!tile) {
    tile = document.createElement("figure");
    tile.className = "tile";
    tile.dataset.participant = id;
    const video = document.createElement("video");
    video.autoplay = true;
    video.playsInline = true;
    const caption = document.createElement("figcaption");
    tile.append(video, caption);
    grid.append(tile);
  }
  return tile;
}

function render() {
  const present = new Set();
  for (const person of call.participants) {
    present.add(person.id);
    const tile = tileFor(person.id);
    const video = tile.querySelector("video");
    tile.classList.toggle("me", person.you);
    tile.dataset.audioMuted = String(person.muted.audio);
    tile.dataset.videoMuted = String(person.muted.video);
    const flags = [person.muted.audio ? "muted" : "", person.muted.video ? "camera off" : ""]
      .filter(Boolean).join(", ");
    tile.querySelector("figcaption").textContent =
      `${person.name}${person.you ? " (you)" : ""}${flags ? ` · ${flags}` : ""}`;
    if (person.you) {
      video.muted = true;
      if (video.srcObject !== call.localStream) video.srcObject = call.localStream;
      continue;
    }
    const tracks = ["video", "audio"]
      .map((kind) => call.tracksByMid.get(person.mids[kind]))
      .filter(Boolean);
    const current = video.srcObject ? video.srcObject.getTracks() : [];
    if (tracks.length !== current.length || tracks.some((t, i) => t !== current[i])) {
      video.srcObject = tracks.length ? new MediaStream(tracks) : null;
    }
  }
  for (const tile of grid.querySelectorAll(".tile")) {
    if (!present.has(tile.dataset.participant)) tile.remove();
  }
}

async function markSpeakers() {
  const pc = call.subscribePc;
  if (!pc) return;
  const levels = new Map();
  const stats = await pc.getStats();
  for (const report of stats.values()) {
    if (report.type === "inbound-rtp" && report.kind === "audio") {
      levels.set(report.mid, report.audioLevel || 0);
    }
  }
  for (const person of call.participants) {
    const tile = grid.querySelector(`[data-participant="${CSS.escape(person.id)}"]`);
    if (!tile || person.you) continue;
    const level = levels.get(person.mids.audio) || 0;
    tile.classList.toggle("speaking", !person.muted.audio && level > SPEAKING_LEVEL);
  }
}

// --- controls -----------------------------------------------------------------------------
function toggle(kind, button, offLabel, onLabel) {
  call.muted[kind] = !call.muted[kind];
  for (const track of call.localStream.getTracks()) {
    if (track.kind === kind) track.enabled = !call.muted[kind];
  }
  button.textContent = call.muted[kind] ? onLabel : offLabel;
  button.setAttribute("aria-pressed", String(call.muted[kind]));
  client.send({ type: "mute", ...call.muted });
}

muteButton.addEventListener("click", () => toggle("audio", muteButton, "Mute", "Unmute"));
cameraButton.addEventListener("click", () => toggle("video", cameraButton, "Camera off",
                                                     "Camera on"));
leaveButton.addEventListener("click", () => {
  call.wantJoined = false;
  client.send({ type: "leave" });
  closeConnections();
  setStatus("left", "You left the call.");
  leaveButton.hidden = true;
  joinButton.textContent = "Join";
  joinButton.hidden = false;
});
// Captions are the call's, not one person's: the worker transcribes everyone's audio while
// they are on, and they reach every page of the room (this one through its room socket).
function showCaptionsState(on) {
  call.captions = on;
  captionsButton.textContent = on ? "Captions off" : "Captions on";
  captionsButton.setAttribute("aria-pressed", String(on));
}
captionsButton.addEventListener("click", () => client.send({ type: "captions", on: !call.captions }));
const board = new CaptionBoard(document.getElementById("captions"), root.dataset.slug);
const roomClient = new RoomClient(root.dataset.slug);
roomClient.addEventListener("caption", ({ detail }) => board.onCaption(detail.caption));
roomClient.addEventListener("caption-error", ({ detail }) => board.onError(detail.error));

joinButton.addEventListener("click", () => {
  call.wantJoined = true;
  join();
});

async function main() {
  setStatus("connecting", "Connecting…");
  try {
    call.localStream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
  } catch (error) {
    setStatus("offline", `Camera or microphone unavailable: ${error.message}`);
    return;
  }
  client.start();
  board.loadRecent();
  roomClient.start();
  setInterval(() => markSpeakers().catch(() => {}), 400);
}

main();
