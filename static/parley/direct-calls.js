// Direct messages and 1:1 video calls, browser to browser (docs/signaling.md), rendered into
// templates/signaling/_direct.html:
//
//   const direct = new DirectCalls({ slug, container: document.getElementById("direct") });
//   direct.start();               // opens the signaling socket
//   direct.message({ id, name }); // invite someone from the room's presence to a chat
//   direct.call({ id, name });    // ... to a video call
//   direct.close();               // hang up everything, stop every local track
//
// Lifetimes: one SignalingClient for the instance; one Conversation per call id, from the
// invitation to its end; each accepted conversation owns one RTCPeerConnection, and a video
// one its local camera/microphone stream, both closed/stopped when the conversation ends
// however it ends (hang-up, the other side, the socket dropping, close()). Only the caller
// offers, including ICE restarts, so offers never collide. Chat text and files go over the
// data channel only; the server never sees them.
import { SignalingClient, EndReason, CLOSE_FORBIDDEN, CLOSE_NOT_FOUND } from "./signaling-protocol.js";
import { iceProblemMessage, watchIce } from "./ice-health.js";

export const MAX_TEXT_CHARS = 4000;
// The default file limit; the server's hello says the configured one (SIGNAL_MAX_FILE_BYTES).
export const DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024;
// 16 KiB chunks pass every browser's data channel message limit; the sender waits whenever
// more than BUFFER_HIGH is queued and resumes at BUFFER_LOW (bufferedamountlow).
export const CHUNK_BYTES = 16 * 1024;
const BUFFER_HIGH = 1024 * 1024;
const BUFFER_LOW = 256 * 1024;
// A blip shorter than this heals by itself; after it the caller restarts ICE.
const DISCONNECTED_GRACE_MS = 2000;
// The callee's own timer, in case the server's timeout never reaches it (its process died).
const INVITE_GRACE_SECONDS = 5;

const STATUS = {
  connecting: "Connecting…",
  connected: "Connected (peer to peer)",
  reconnecting: "Reconnecting…",
  ended: "Ended",
};

function timeText(date) {
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} bytes`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

function fill(root, field, text) {
  root.querySelector(`[data-field="${field}"]`).textContent = text;
}

function endText(conv, reason) {
  const them = conv.peer.name;
  const what = conv.mode === "video" ? "call" : "chat";
  switch (reason) {
    case "you-hung-up": return conv.mode === "video" ? "You hung up." : "You left the chat.";
    case "you-cancelled": return `You cancelled the ${what} with ${them}.`;
    case "you-declined": return `You declined ${them}'s ${what}.`;
    case EndReason.DECLINED: return `${them} declined your ${what}.`;
    case EndReason.CANCELLED: return `${them} cancelled the ${what}.`;
    case EndReason.TIMEOUT:
      return conv.role === "caller"
        ? `No answer from ${them}: the invitation timed out.`
        : `You missed a ${what} from ${them}: the invitation timed out.`;
    case EndReason.HUNG_UP: return conv.mode === "video" ? `${them} hung up.` : `${them} left the chat.`;
    case EndReason.GONE: return `${them} left the room; the ${what} ended.`;
    case EndReason.ANSWERED_ELSEWHERE: return `You answered ${them} in another tab.`;
    case "connection-lost": return `The connection to the server dropped; the ${what} with ${them} ended.`;
    case "media-unavailable": return `Camera or microphone unavailable; the call with ${them} ended.`;
    default: return `The ${what} with ${them} ended.`;
  }
}

export class DirectCalls {
  constructor({ slug, container }) {
    this.slug = slug;
    this.root = container;
    this.me = null;
    this.iceServers = [];
    this.iceTransportPolicy = "all";
    this.limits = { invite_timeout_seconds: 30, max_file_bytes: DEFAULT_MAX_FILE_BYTES };
    this.conversations = new Map(); // call id -> conversation (ended ones until dismissed)
    this.outgoing = new Map(); // client id -> invitation not yet answered by `ringing`
    this.streams = []; // every local stream this instance opened (tests check they ended)
    this.signaling = null;
    this.nextClientId = 1;
    this.noticeEl = container.querySelector("[data-direct-notice]");
    this.noticeEl.tabIndex = -1;
    this.invitationsEl = container.querySelector("[data-direct-invitations]");
    this.conversationsEl = container.querySelector("[data-direct-conversations]");
    this.onPageHide = () => this.close();
    window.parleyDirect = this; // for debugging and browser tests
  }

  // --- the interface -------------------------------------------------------------------------

  start() {
    if (this.signaling) return;
    this.signaling = new SignalingClient(this.slug, (event) => this.onEvent(event));
    this.signaling.start();
    window.addEventListener("pagehide", this.onPageHide);
  }

  message(person) {
    return this.invite(person, "chat");
  }

  call(person) {
    return this.invite(person, "video");
  }

  close() {
    for (const conv of this.conversations.values()) {
      if (conv.state !== "ended") this.hangUp(conv);
    }
    for (const pending of this.outgoing.values()) pending.el.remove();
    this.outgoing.clear();
    for (const stream of this.streams) stream.getTracks().forEach((track) => track.stop());
    if (this.signaling) this.signaling.stop();
    this.signaling = null;
    window.removeEventListener("pagehide", this.onPageHide);
  }

  // --- invitations ---------------------------------------------------------------------------

  invite(person, mode) {
    const open = [...this.conversations.values()].find(
      (c) => c.peer.id === person.id && c.mode === mode && c.state !== "ended");
    if (open) {
      (open.panel || open.invitationEl)?.querySelector("button, input:not([disabled])")?.focus();
      return;
    }
    const clientId = `i${this.nextClientId++}`;
    const el = this.invitationItem("outgoing", mode === "video"
      ? `Calling ${person.name}…` : `Inviting ${person.name} to a direct chat…`);
    const pending = { clientId, peer: person, mode, el };
    el.querySelector('[data-action="cancel"]').addEventListener("click", () => {
      this.outgoing.delete(clientId);
      el.remove();
      pending.cancelled = true;
    });
    this.outgoing.set(clientId, pending);
    if (!this.signaling || !this.signaling.invite(person.id, mode, clientId)) {
      this.outgoing.delete(clientId);
      el.remove();
      this.say("Not connected to the server yet; try again in a moment.");
    }
  }

  invitationItem(kind, text) {
    const el = this.cloneTemplate(kind);
    fill(el, "text", text);
    this.invitationsEl.append(el);
    return el;
  }

  cloneTemplate(name) {
    const template = this.root.querySelector(`template[data-direct-template="${name}"]`);
    return template.content.firstElementChild.cloneNode(true);
  }

  say(text) {
    this.noticeEl.textContent = text;
  }

  newConversation({ call, peer, mode, role }) {
    const conv = {
      id: call, peer, mode, role, state: "ringing", pc: null, channel: null,
      localStream: null, remoteStream: null, pendingCandidates: [], invitationEl: null,
      panel: null, messages: [], files: [], sent: [], incoming: null,
      sendQueue: Promise.resolve(), marks: {}, timers: [],
    };
    this.conversations.set(call, conv);
    return conv;
  }

  onRinging({ call, client_id: clientId, to, mode }) {
    const pending = this.outgoing.get(clientId);
    this.outgoing.delete(clientId);
    if (!pending || pending.cancelled) {
      this.signaling.cancel(call);
      return;
    }
    const conv = this.newConversation({ call, peer: to, mode, role: "caller" });
    conv.invitationEl = pending.el;
    conv.marks.ringing = performance.timeOrigin + performance.now();
    const el = pending.el;
    el.dataset.state = "ringing";
    el.dataset.call = call;
    fill(el, "state", "Ringing…");
    const cancel = el.querySelector('[data-action="cancel"]');
    cancel.replaceWith(cancel.cloneNode(true)); // drop the pre-ringing handler
    el.querySelector('[data-action="cancel"]').addEventListener("click", () => {
      this.signaling.cancel(call);
      this.endConversation(conv, "you-cancelled");
    });
  }

  onInvite({ call, from, mode, expires_in: expiresIn }) {
    if (this.conversations.has(call)) return;
    const conv = this.newConversation({ call, peer: from, mode, role: "callee" });
    conv.state = "incoming";
    const text = mode === "video" ? `${from.name} is calling you` : `${from.name} wants to message you`;
    const el = this.invitationItem("incoming", text);
    el.dataset.call = call;
    conv.invitationEl = el; // the list is a live region: the invitation is announced
    const accept = el.querySelector('[data-action="accept"]');
    const decline = el.querySelector('[data-action="decline"]');
    accept.setAttribute("aria-describedby", this.describe(el));
    decline.setAttribute("aria-describedby", this.describe(el));
    accept.addEventListener("click", () => {
      accept.disabled = decline.disabled = true;
      fill(el, "state", "Answering…");
      if (!this.signaling.accept(call)) this.endConversation(conv, "connection-lost");
    });
    decline.addEventListener("click", () => {
      this.signaling.decline(call);
      this.endConversation(conv, "you-declined");
    });
    conv.timers.push(setTimeout(() => {
      if (conv.state === "incoming") this.endConversation(conv, EndReason.TIMEOUT);
    }, ((expiresIn || this.limits.invite_timeout_seconds) + INVITE_GRACE_SECONDS) * 1000));
  }

  describe(el) {
    const text = el.querySelector('[data-field="text"]');
    text.id = text.id || `direct-text-${el.dataset.call}`;
    return text.id;
  }

  async onAccepted({ call, peer, mode, initiator }) {
    const conv = this.conversations.get(call);
    if (!conv || conv.state === "ended") return;
    conv.peer = peer;
    conv.state = "connecting";
    conv.marks.accepted = performance.timeOrigin + performance.now();
    const hadFocus = conv.invitationEl && conv.invitationEl.contains(document.activeElement);
    if (conv.invitationEl) conv.invitationEl.remove();
    conv.invitationEl = null;
    this.say("");
    this.openPanel(conv);
    // Keyboard users answering or waiting land in the conversation, not at the page's top.
    if (hadFocus) conv.panel.querySelector('[data-action="hang-up"]').focus();
    await this.startPeer(conv, initiator);
  }

  onError(event) {
    if (event.client_id && this.outgoing.has(event.client_id)) {
      const pending = this.outgoing.get(event.client_id);
      this.outgoing.delete(event.client_id);
      pending.el.remove();
      this.say(event.message);
      return;
    }
    const conv = event.call && this.conversations.get(event.call);
    if (conv && conv.panel) this.panelNotice(conv, event.message);
    else this.say(event.message);
    console.warn("signaling error", event.code, event.message);
  }

  // --- server events -------------------------------------------------------------------------

  async onEvent(event) {
    const conv = event.call ? this.conversations.get(event.call) : null;
    switch (event.type) {
      case "socket":
        if (event.state === "closed") this.onSocketClosed(event);
        return;
      case "hello":
        this.me = event.you;
        this.iceServers = event.ice_servers || [];
        this.iceTransportPolicy = event.ice_transport_policy || "all";
        this.limits = { ...this.limits, ...(event.limits || {}) };
        return;
      case "ringing": return this.onRinging(event);
      case "invite": return this.onInvite(event);
      case "accepted": return this.onAccepted(event);
      case "call-ended":
        if (conv) this.endConversation(conv, event.reason);
        return;
      case "offer": return conv && this.onOffer(conv, event.sdp);
      case "answer": return conv && this.onAnswer(conv, event.sdp);
      case "ice-candidate": return conv && this.onRemoteCandidate(conv, event.candidate);
      case "error": return this.onError(event);
      default: return undefined;
    }
  }

  onSocketClosed({ code }) {
    // The server ends a connection's calls when it closes: so do we.
    for (const conv of this.conversations.values()) {
      if (conv.state !== "ended") this.endConversation(conv, "connection-lost");
    }
    for (const pending of this.outgoing.values()) pending.el.remove();
    this.outgoing.clear();
    if (code === CLOSE_FORBIDDEN || code === CLOSE_NOT_FOUND) {
      this.say("Direct messages and calls are not available in this room.");
    }
  }

  // --- the peer connection -------------------------------------------------------------------

  async startPeer(conv, initiator) {
    const pc = new RTCPeerConnection({
      iceServers: this.iceServers, iceTransportPolicy: this.iceTransportPolicy });
    conv.pc = pc;
    conv.initiator = initiator;
    pc.onicecandidate = ({ candidate }) => {
      if (candidate && conv.pc === pc) this.signaling.candidate(conv.id, candidate.toJSON());
    };
    pc.onconnectionstatechange = () => this.onConnectionState(conv, pc);
    conv.stopIceWatch = watchIce(pc, {
      relayOnly: this.iceTransportPolicy === "relay",
      onProblem: (problem) => {
        if (conv.pc !== pc) return;
        if (problem) this.setStatus(conv, "media-failed", iceProblemMessage(problem));
        else if (conv.state === "media-failed") this.setStatus(conv, "connected");
      },
    });
    if (conv.mode === "video") {
      let stream;
      try {
        stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
      } catch (error) {
        console.warn("getUserMedia failed", error);
        this.hangUp(conv, "media-unavailable");
        return;
      }
      this.streams.push(stream);
      if (conv.state === "ended") { // hung up while the camera was starting
        stream.getTracks().forEach((track) => track.stop());
        return;
      }
      conv.localStream = stream;
      conv.panel.querySelector('[data-field="local"]').srcObject = stream;
      for (const track of stream.getTracks()) pc.addTrack(track, stream);
      pc.ontrack = ({ streams }) => {
        const remote = conv.panel.querySelector('[data-field="remote"]');
        if (streams[0] && remote.srcObject !== streams[0]) {
          conv.remoteStream = streams[0];
          remote.srcObject = streams[0];
          remote.addEventListener("loadeddata", () => {
            conv.marks.firstFrame = performance.timeOrigin + performance.now();
          }, { once: true });
        }
      };
    } else if (initiator) {
      this.attachChannel(conv, pc.createDataChannel("direct", { ordered: true }));
    } else {
      pc.ondatachannel = ({ channel }) => this.attachChannel(conv, channel);
    }
    if (initiator) await this.sendOffer(conv, pc, false);
  }

  async sendOffer(conv, pc, iceRestart) {
    const offer = await pc.createOffer({ iceRestart });
    if (conv.pc !== pc) return;
    await pc.setLocalDescription(offer);
    this.signaling.offer(conv.id, pc.localDescription.sdp);
  }

  async onOffer(conv, sdp) {
    const pc = conv.pc;
    if (!pc) return;
    await pc.setRemoteDescription({ type: "offer", sdp });
    await this.flushCandidates(conv);
    const answer = await pc.createAnswer();
    if (conv.pc !== pc) return;
    await pc.setLocalDescription(answer);
    this.signaling.answer(conv.id, pc.localDescription.sdp);
  }

  async onAnswer(conv, sdp) {
    if (!conv.pc) return;
    await conv.pc.setRemoteDescription({ type: "answer", sdp });
    await this.flushCandidates(conv);
  }

  async onRemoteCandidate(conv, candidate) {
    if (!conv.pc) return;
    if (!conv.pc.remoteDescription) {
      conv.pendingCandidates.push(candidate);
      return;
    }
    await this.addCandidate(conv, candidate);
  }

  async flushCandidates(conv) {
    const pending = conv.pendingCandidates;
    conv.pendingCandidates = [];
    for (const candidate of pending) await this.addCandidate(conv, candidate);
  }

  async addCandidate(conv, candidate) {
    try {
      await conv.pc.addIceCandidate(candidate);
    } catch (error) {
      console.warn("could not add a remote candidate", error);
    }
  }

  onConnectionState(conv, pc) {
    if (conv.pc !== pc) return;
    clearTimeout(conv.restartTimer);
    switch (pc.connectionState) {
      case "connected":
        conv.marks.connected = performance.timeOrigin + performance.now();
        if (conv.mode === "video" || (conv.channel && conv.channel.readyState === "open")) {
          this.setStatus(conv, "connected");
        }
        return;
      case "disconnected":
        this.setStatus(conv, "reconnecting");
        if (conv.initiator) {
          conv.restartTimer = setTimeout(() => this.restartIce(conv, pc), DISCONNECTED_GRACE_MS);
        }
        return;
      case "failed":
        if (conv.state !== "media-failed") this.setStatus(conv, "reconnecting");
        if (conv.initiator) this.restartIce(conv, pc);
        return;
      default:
        return;
    }
  }

  restartIce(conv, pc) {
    if (conv.pc !== pc || pc.connectionState === "connected") return;
    pc.restartIce();
    this.sendOffer(conv, pc, true).catch((error) => console.warn("ICE restart failed", error));
  }

  // --- ending --------------------------------------------------------------------------------

  hangUp(conv, reason = "you-hung-up") {
    if (conv.state === "ended") return;
    if (this.signaling) this.signaling.hangUp(conv.id);
    this.endConversation(conv, reason);
  }

  // Close everything the conversation holds: its connection, channel and local tracks.
  endConversation(conv, reason) {
    if (conv.state === "ended") return;
    conv.state = "ended";
    conv.endReason = reason;
    for (const timer of conv.timers) clearTimeout(timer);
    clearTimeout(conv.restartTimer);
    if (conv.stopIceWatch) conv.stopIceWatch();
    if (conv.incoming) this.failIncoming(conv, "The file did not arrive: the chat ended.");
    if (conv.channel) conv.channel.close();
    if (conv.pc) conv.pc.close();
    if (conv.localStream) conv.localStream.getTracks().forEach((track) => track.stop());
    conv.pc = null;
    conv.channel = null;
    const text = endText(conv, reason);
    if (conv.invitationEl) {
      const hadFocus = conv.invitationEl.contains(document.activeElement);
      conv.invitationEl.remove();
      conv.invitationEl = null;
      if (hadFocus) this.noticeEl.focus(); // where the news is, not the page's top
    }
    if (!conv.panel) {
      this.conversations.delete(conv.id);
      this.say(text);
      return;
    }
    for (const field of ["local", "remote"]) {
      const video = conv.panel.querySelector(`[data-field="${field}"]`);
      if (video) video.srcObject = null;
    }
    this.setChatEnabled(conv, false);
    this.setStatus(conv, "ended", text);
    conv.panel.querySelectorAll('[data-action="hang-up"], [data-action="microphone"], [data-action="camera"]')
      .forEach((button) => { button.hidden = true; });
    const dismiss = conv.panel.querySelector('[data-action="dismiss"]');
    const hadFocus = conv.panel.contains(document.activeElement);
    dismiss.hidden = false;
    if (hadFocus) dismiss.focus();
  }

  dismiss(conv) {
    if (conv.state !== "ended") this.hangUp(conv);
    for (const file of conv.files) URL.revokeObjectURL(file.url);
    conv.panel.remove();
    this.conversations.delete(conv.id);
  }

  // --- the panel -----------------------------------------------------------------------------

  openPanel(conv) {
    const panel = this.cloneTemplate(conv.mode);
    conv.panel = panel;
    panel.dataset.call = conv.id;
    const title = panel.querySelector('[data-field="title"]');
    title.id = `direct-title-${conv.id}`;
    title.textContent = conv.mode === "video" ? `Call with ${conv.peer.name}` : `Direct chat with ${conv.peer.name}`;
    panel.setAttribute("aria-labelledby", title.id);
    panel.querySelector('[data-action="hang-up"]').addEventListener("click", () => this.hangUp(conv));
    const dismiss = panel.querySelector('[data-action="dismiss"]');
    dismiss.setAttribute("aria-label", conv.mode === "video"
      ? `Close the call with ${conv.peer.name}` : `Close the chat with ${conv.peer.name}`);
    dismiss.addEventListener("click", () => this.dismiss(conv));
    if (conv.mode === "video") this.wireVideo(conv);
    else this.wireChat(conv);
    this.conversationsEl.append(panel);
    this.setStatus(conv, "connecting");
  }

  setStatus(conv, state, detail = "") {
    if (conv.state !== "ended" || state === "ended") conv.state = state;
    if (!conv.panel) return;
    conv.panel.dataset.state = state;
    const status = conv.panel.querySelector('[data-field="status"]');
    status.dataset.state = state;
    status.textContent = detail || STATUS[state] || "";
  }

  panelNotice(conv, text) {
    const notice = conv.panel.querySelector('[data-field="notice"]');
    notice.textContent = text;
    notice.hidden = !text;
  }

  wireVideo(conv) {
    for (const [action, kind] of [["microphone", "audio"], ["camera", "video"]]) {
      const button = conv.panel.querySelector(`[data-action="${action}"]`);
      button.addEventListener("click", () => {
        if (!conv.localStream) return;
        const tracks = conv.localStream.getTracks().filter((t) => t.kind === kind);
        const enabled = !(tracks[0] && tracks[0].enabled);
        for (const track of tracks) track.enabled = enabled;
        button.setAttribute("aria-pressed", String(enabled));
      });
    }
  }

  // --- direct chat ---------------------------------------------------------------------------

  wireChat(conv) {
    const panel = conv.panel;
    const input = panel.querySelector('input[data-field="text"]');
    input.setAttribute("aria-label", `Message ${conv.peer.name}`);
    input.placeholder = `Message ${conv.peer.name} (peer to peer)`;
    input.maxLength = MAX_TEXT_CHARS;
    panel.querySelector('[data-field="file-limit"]').textContent =
      `Up to ${formatBytes(this.limits.max_file_bytes)}, straight to ${conv.peer.name}.`;
    panel.querySelector('[data-field="form"]').addEventListener("submit", (event) => {
      event.preventDefault();
      const text = input.value.trim();
      if (!text || !conv.channel || conv.channel.readyState !== "open") return;
      const at = Date.now();
      conv.channel.send(JSON.stringify({ kind: "text", text, at }));
      this.showMessage(conv, this.me ? this.me.name : "You", text, at, true);
      input.value = "";
    });
    const fileInput = panel.querySelector('[data-field="file"]');
    fileInput.addEventListener("change", () => {
      const file = fileInput.files[0];
      fileInput.value = "";
      if (file) this.queueFile(conv, file);
    });
  }

  setChatEnabled(conv, enabled) {
    if (!conv.panel) return;
    conv.panel.querySelectorAll('input[data-field="text"], [data-field="send"], [data-field="file"]')
      .forEach((el) => { el.disabled = !enabled; });
  }

  attachChannel(conv, channel) {
    conv.channel = channel;
    channel.binaryType = "arraybuffer";
    channel.bufferedAmountLowThreshold = BUFFER_LOW;
    channel.onopen = () => {
      if (conv.channel !== channel) return;
      conv.marks.channelOpen = performance.timeOrigin + performance.now();
      this.setChatEnabled(conv, true);
      this.setStatus(conv, "connected");
    };
    channel.onclose = () => {
      if (conv.channel === channel) this.setChatEnabled(conv, false);
    };
    channel.onmessage = ({ data }) => this.onChannelMessage(conv, data);
  }

  showMessage(conv, author, text, at, mine = false) {
    const list = conv.panel.querySelector('[data-field="messages"]');
    const stick = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
    const li = document.createElement("li");
    li.className = mine ? "message mine" : "message";
    const who = document.createElement("span");
    who.className = "author";
    who.textContent = author;
    const when = document.createElement("time");
    const date = new Date(at);
    when.dateTime = date.toISOString();
    when.textContent = timeText(date);
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text;
    li.append(who, when, body);
    list.append(li);
    conv.messages.push({ author, text, at, mine });
    if (stick || mine) list.scrollTop = list.scrollHeight;
  }

  onChannelMessage(conv, data) {
    if (typeof data !== "string") {
      this.onFileChunk(conv, data);
      return;
    }
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (message.kind === "text" && typeof message.text === "string"
        && message.text.length <= MAX_TEXT_CHARS) {
      const at = Number.isFinite(message.at) ? message.at : Date.now();
      this.showMessage(conv, conv.peer.name, message.text, at);
    } else if (message.kind === "file") {
      this.startIncoming(conv, message);
    } else if (message.kind === "file-end") {
      this.finishIncoming(conv, message.id);
    }
  }

  // --- files over the data channel -----------------------------------------------------------

  transferItem(conv, verb, name, size) {
    const li = document.createElement("li");
    li.className = "direct-transfer";
    const label = document.createElement("span");
    label.className = "direct-transfer-name";
    label.textContent = `${verb} ${name} (${formatBytes(size)})`;
    const bar = document.createElement("progress");
    bar.max = size || 1;
    bar.value = 0;
    bar.setAttribute("aria-label", `${verb} ${name}`);
    const state = document.createElement("span");
    state.className = "hint";
    li.append(label, bar, state);
    conv.panel.querySelector('[data-field="transfers"]').append(li);
    return { li, bar, state, label };
  }

  queueFile(conv, file) {
    const limit = this.limits.max_file_bytes;
    if (file.size > limit) {
      this.panelNotice(conv, `“${file.name}” is ${formatBytes(file.size)}: files are limited to `
        + `${formatBytes(limit)}. Nothing was sent.`);
      return;
    }
    this.panelNotice(conv, "");
    conv.sendQueue = conv.sendQueue.then(() => this.sendFile(conv, file)).catch((error) => {
      console.warn("sending a file failed", error);
    });
  }

  async sendFile(conv, file) {
    const channel = conv.channel;
    const ui = this.transferItem(conv, "Sending", file.name, file.size);
    const id = crypto.randomUUID();
    const record = { id, name: file.name, size: file.size, sent: 0, done: false };
    conv.sent.push(record);
    const open = () => conv.channel === channel && channel.readyState === "open";
    if (!open()) {
      ui.state.textContent = "Not sent: the chat is not connected.";
      return;
    }
    channel.send(JSON.stringify({ kind: "file", id, name: file.name, size: file.size,
                                  type: file.type || "application/octet-stream" }));
    for (let offset = 0; offset < file.size; offset += CHUNK_BYTES) {
      const chunk = await file.slice(offset, offset + CHUNK_BYTES).arrayBuffer();
      while (open() && channel.bufferedAmount > BUFFER_HIGH) {
        await new Promise((resolve) => {
          const done = () => {
            channel.removeEventListener("bufferedamountlow", done);
            channel.removeEventListener("close", done);
            resolve();
          };
          channel.addEventListener("bufferedamountlow", done);
          channel.addEventListener("close", done);
        });
      }
      if (!open()) {
        ui.state.textContent = "Not sent: the chat ended.";
        return;
      }
      channel.send(chunk);
      record.sent = offset + chunk.byteLength;
      ui.bar.value = record.sent;
    }
    channel.send(JSON.stringify({ kind: "file-end", id }));
    record.done = true;
    ui.bar.value = file.size;
    ui.state.textContent = "Sent";
  }

  startIncoming(conv, { id, name, size, type }) {
    if (conv.incoming) this.failIncoming(conv, `“${conv.incoming.name}” was cut short.`);
    const safeName = typeof name === "string" && name ? name.slice(0, 255) : "file";
    if (!Number.isInteger(size) || size < 0 || size > this.limits.max_file_bytes) {
      this.panelNotice(conv, `${conv.peer.name} tried to send “${safeName}”, larger than `
        + `${formatBytes(this.limits.max_file_bytes)}; it was refused.`);
      conv.refusing = id;
      return;
    }
    conv.refusing = null;
    conv.incoming = { id, name: safeName, size, type: typeof type === "string" ? type : "",
                      chunks: [], received: 0,
                      ui: this.transferItem(conv, "Receiving", safeName, size) };
  }

  onFileChunk(conv, buffer) {
    const incoming = conv.incoming;
    if (!incoming) return; // a refused file's chunks
    incoming.received += buffer.byteLength;
    if (incoming.received > incoming.size) {
      this.failIncoming(conv, `“${incoming.name}” was larger than announced; it was dropped.`);
      return;
    }
    incoming.chunks.push(buffer);
    incoming.ui.bar.value = incoming.received;
  }

  finishIncoming(conv, id) {
    const incoming = conv.incoming;
    if (!incoming || incoming.id !== id) return;
    conv.incoming = null;
    if (incoming.received !== incoming.size) {
      incoming.ui.state.textContent = "Incomplete; dropped.";
      return;
    }
    const blob = new Blob(incoming.chunks, { type: incoming.type || "application/octet-stream" });
    const url = URL.createObjectURL(blob);
    const link = document.createElement("a");
    link.href = url;
    link.download = incoming.name;
    link.textContent = incoming.name;
    link.className = "direct-download";
    incoming.ui.state.replaceChildren("Received: ", link);
    incoming.ui.bar.value = incoming.size;
    conv.files.push({ name: incoming.name, size: incoming.size, type: blob.type, blob, url });
  }

  failIncoming(conv, text) {
    const incoming = conv.incoming;
    conv.incoming = null;
    if (incoming && incoming.ui) incoming.ui.state.textContent = text;
  }
}
