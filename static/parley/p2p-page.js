// Direct chat (RTCDataChannel) and direct video between two people, browser to browser.
// Lifetimes: the page owns one SignalingClient for its whole life and at most one
// RTCPeerConnection at a time, created on `ready` and closed on `peer-left`, hang-up or a new
// `ready`. Only the initiator (the newcomer) ever offers, including ICE restarts, so offers
// never collide.
import { SignalingClient } from "./signaling-protocol.js";
import { iceProblemMessage, watchIce } from "./ice-health.js";

const root = document.getElementById("direct");
const slug = root.dataset.slug;
const mode = root.dataset.mode;
const statusEl = document.getElementById("call-status");
const fullEl = document.getElementById("room-full");
let iceServers = JSON.parse(document.getElementById("ice-servers").textContent);
let iceTransportPolicy = "all"; // "relay": TURN only (ICE_TRANSPORT_POLICY), from hello

// A blip shorter than this heals by itself; after it the initiator restarts ICE.
const DISCONNECTED_GRACE_MS = 2000;

const call = {
  state: "connecting",
  pc: null,
  channel: null,
  peer: null,
  initiator: false,
  pendingCandidates: [],
  localStream: null,
  restartTimer: null,
  received: [],
  // Wall-clock milestones (ms since the epoch) of the current call, for bench/p2p_setup.py.
  marks: {},
};

function mark(name) {
  call.marks[name] = performance.timeOrigin + performance.now();
}
window.parleyCall = call; // for debugging and browser tests

const STATUS_TEXT = {
  connecting: "Connecting…",
  waiting: "Waiting for the other person…",
  negotiating: "Connecting to the other person…",
  connected: "Connected (peer to peer)",
  reconnecting: "Reconnecting…",
  "peer-left": "The other person left. Waiting for them…",
  "room-full": "This call already has two people.",
  replaced: "This call is open in another tab.",
  "hung-up": "You left the call.",
  forbidden: "You are not allowed in this room.",
  offline: "Offline",
  "media-failed": "", // the text is the ice-health.js message
};

function setState(state, detail = "") {
  call.state = state;
  statusEl.dataset.state = state;
  statusEl.textContent = [STATUS_TEXT[state], detail].filter(Boolean).join(" ");
  retryButton.hidden = state !== "media-failed";
}

// Retry after a media problem: leave and join again, so both sides start a fresh connection
// (the newcomer offers, as always).
const retryButton = document.getElementById("retry");
retryButton.addEventListener("click", () => {
  signaling.leave();
  closePeerConnection();
  signaling.join();
  setState("connecting");
});

function onIceProblem(problem, detail) {
  if (problem) {
    console.warn("direct call media", problem, detail);
    setState("media-failed", iceProblemMessage(problem));
  } else if (call.state === "media-failed") {
    setState("connected");
  }
}

const signaling = new SignalingClient(slug, mode, onSignal);

async function onSignal(event) {
  switch (event.type) {
    case "socket":
      if (event.state === "closed") {
        if (event.code === 4409) setState("replaced");
        else if (event.code === 4403 || event.code === 4404) setState("forbidden");
        else if (call.state !== "connected") setState("reconnecting", `in ${event.retryInSeconds}s`);
      }
      return;
    case "hello":
      iceServers = event.ice_servers;
      iceTransportPolicy = event.ice_transport_policy || "all";
      return;
    case "waiting":
      closePeerConnection();
      if (call.state !== "peer-left") setState("waiting");
      return;
    case "ready":
      mark("ready");
      return startCall(event);
    case "offer":
      return onOffer(event);
    case "answer":
      if (event.peer === call.peer && call.pc) {
        await call.pc.setRemoteDescription({ type: "answer", sdp: event.sdp });
        await flushCandidates();
      }
      return;
    case "ice-candidate":
      return onRemoteCandidate(event);
    case "peer-left":
      if (event.peer === call.peer) {
        closePeerConnection();
        setState("peer-left");
      }
      return;
    case "room-full":
      setState("room-full");
      if (event.group_call_url) {
        fullEl.querySelector("a").href = event.group_call_url;
        fullEl.hidden = false;
      }
      return;
    case "replaced":
      closePeerConnection();
      setState("replaced");
      return;
    case "error":
      console.warn("signaling error", event.code, event.message);
      return;
    default:
      return;
  }
}

async function startCall({ initiator, peer, peer_name: peerName }) {
  closePeerConnection();
  call.marks = { ready: call.marks.ready, joinSent: call.marks.joinSent };
  call.peer = peer;
  call.initiator = initiator;
  document.getElementById("peer-name").textContent = peerName || "";
  document.getElementById("peer-line").hidden = !peerName; // no dangling "With" while alone
  setState("negotiating");
  const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy });
  call.pc = pc;
  pc.onicecandidate = ({ candidate }) => {
    if (candidate && call.pc === pc) {
      signaling.send({ type: "ice-candidate", candidate: candidate.toJSON(), peer });
    }
  };
  pc.onconnectionstatechange = () => onConnectionState(pc);
  // After the handler above, so that on "failed" the problem, not "Reconnecting…", shows.
  call.stopIceWatch = watchIce(pc, { relayOnly: iceTransportPolicy === "relay",
                                     onProblem: onIceProblem });
  if (mode === "video") {
    for (const track of call.localStream.getTracks()) pc.addTrack(track, call.localStream);
    pc.ontrack = ({ streams }) => {
      const remote = document.getElementById("remote-video");
      if (remote.srcObject !== streams[0]) {
        remote.srcObject = streams[0];
        remote.addEventListener("loadeddata", () => mark("firstFrame"), { once: true });
      }
    };
  }
  if (mode === "chat") {
    if (initiator) attachChannel(pc.createDataChannel("chat"));
    else pc.ondatachannel = ({ channel }) => attachChannel(channel);
  }
  if (initiator) await sendOffer(pc, false);
}

async function sendOffer(pc, iceRestart) {
  const offer = await pc.createOffer({ iceRestart });
  await pc.setLocalDescription(offer);
  signaling.send({ type: "offer", sdp: pc.localDescription.sdp, peer: call.peer });
}

async function onOffer({ sdp, peer }) {
  if (peer !== call.peer || !call.pc) return;
  await call.pc.setRemoteDescription({ type: "offer", sdp });
  await flushCandidates();
  const answer = await call.pc.createAnswer();
  await call.pc.setLocalDescription(answer);
  signaling.send({ type: "answer", sdp: call.pc.localDescription.sdp, peer });
}

async function onRemoteCandidate({ candidate, peer }) {
  if (peer !== call.peer || !call.pc) return;
  if (!call.pc.remoteDescription) {
    call.pendingCandidates.push(candidate);
    return;
  }
  await addCandidate(candidate);
}

async function flushCandidates() {
  const pending = call.pendingCandidates;
  call.pendingCandidates = [];
  for (const candidate of pending) await addCandidate(candidate);
}

async function addCandidate(candidate) {
  try {
    await call.pc.addIceCandidate(candidate);
  } catch (error) {
    console.warn("could not add a remote candidate", error);
  }
}

function onConnectionState(pc) {
  if (call.pc !== pc) return;
  clearTimeout(call.restartTimer);
  switch (pc.connectionState) {
    case "connected":
      mark("connected");
      setState("connected");
      return;
    case "disconnected":
      setState("reconnecting");
      if (call.initiator) {
        call.restartTimer = setTimeout(() => restartIce(pc), DISCONNECTED_GRACE_MS);
      }
      return;
    case "failed":
      setState("reconnecting");
      if (call.initiator) restartIce(pc);
      return;
    default:
      return;
  }
}

function restartIce(pc) {
  if (call.pc !== pc || pc.connectionState === "connected") return;
  pc.restartIce();
  sendOffer(pc, true).catch((error) => console.warn("ICE restart failed", error));
}

function closePeerConnection() {
  clearTimeout(call.restartTimer);
  if (call.stopIceWatch) call.stopIceWatch();
  call.stopIceWatch = null;
  if (call.channel) call.channel.close();
  if (call.pc) call.pc.close();
  call.pc = null;
  call.channel = null;
  call.peer = null;
  call.pendingCandidates = [];
  const remote = document.getElementById("remote-video");
  if (remote) remote.srcObject = null;
  setChatEnabled(false);
}

// --- direct chat ------------------------------------------------------------------------------
function attachChannel(channel) {
  call.channel = channel;
  channel.onopen = () => {
    mark("channelOpen");
    setChatEnabled(true);
  };
  channel.onclose = () => setChatEnabled(false);
  channel.onmessage = ({ data }) => {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (typeof message.text !== "string") return;
    call.received.push(message.text);
    showChatLine(document.getElementById("peer-name").textContent || "Them", message.text);
  };
}

function setChatEnabled(enabled) {
  const input = document.getElementById("direct-text");
  if (input) input.disabled = !enabled;
}

function showChatLine(who, text) {
  const li = document.createElement("li");
  const author = document.createElement("span");
  author.className = "author";
  author.textContent = who;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  li.append(author, body);
  const list = document.getElementById("direct-messages");
  list.append(li);
  list.scrollTop = list.scrollHeight;
}

function setUpChat() {
  setChatEnabled(false);
  document.getElementById("direct-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("direct-text");
    const text = input.value.trim();
    if (!text || !call.channel || call.channel.readyState !== "open") return;
    call.channel.send(JSON.stringify({ text, at: Date.now() }));
    showChatLine("You", text);
    input.value = "";
  });
}

// --- direct video -----------------------------------------------------------------------------
async function setUpVideo() {
  call.localStream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
  document.getElementById("local-video").srcObject = call.localStream;
  const toggle = (button, kind, offLabel, onLabel) => {
    button.addEventListener("click", () => {
      const tracks = call.localStream.getTracks().filter((t) => t.kind === kind);
      const enabled = !tracks[0].enabled;
      for (const track of tracks) track.enabled = enabled;
      button.textContent = enabled ? offLabel : onLabel;
      button.setAttribute("aria-pressed", String(!enabled));
    });
  };
  toggle(document.getElementById("mute"), "audio", "Mute", "Unmute");
  toggle(document.getElementById("camera"), "video", "Camera off", "Camera on");
}

function setUpHangUp() {
  const hangUp = document.getElementById("hang-up");
  const rejoin = document.getElementById("rejoin");
  hangUp.addEventListener("click", () => {
    signaling.leave();
    closePeerConnection();
    setState("hung-up");
    hangUp.hidden = true;
    rejoin.hidden = false;
  });
  rejoin.addEventListener("click", () => {
    signaling.join();
    setState("connecting");
    hangUp.hidden = false;
    rejoin.hidden = true;
  });
}

async function main() {
  setState("connecting");
  try {
    if (mode === "video") await setUpVideo();
    else setUpChat();
  } catch (error) {
    setState("offline");
    statusEl.textContent = `Camera or microphone unavailable: ${error.message}`;
    return;
  }
  setUpHangUp();
  signaling.onJoinSent = () => mark("joinSent");
  signaling.join();
  signaling.start();
}

main();
