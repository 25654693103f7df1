// The call on the room page (issue #14): pre-join preview and device choice, the group call
// through the SFU (docs/protocol.md, group call socket), tiles, screen sharing, in-call device
// switching and leaving with every local track stopped.
//
// Lifetimes (one owner each):
// - one MeetingCall per page; its SFU socket opens at the first "Join call" and stays open
//   (a later join reuses it); `leave` closes both peer connections and stops every local track;
// - per join: one subscribe connection (the server offers) and, unless listening only, one
//   publish connection (we offer) with an audio and a video transceiver, whose tracks come
//   and go by replaceTrack (camera off = no track and the camera light off), plus a screen
//   transceiver from the first share on (stopping a share keeps it: replaceTrack(null));
// - local tracks: the microphone and camera belong to the page from preview to leave; the
//   screen track from share to stop. Remote tracks are tied to people by mid (`participants`).
import { SfuError, SfuEvent, sfuSocket } from "./sfu-protocol.js";
import { iceProblemMessage, watchIce } from "./ice-health.js";
import { avatar, colourOf, initialsOf, sharedNames, tagOf } from "./people.js";

// Level above which a participant counts as speaking (getStats audioLevel, 0..1).
const SPEAKING_LEVEL = 0.02;
// A join the server has not confirmed by then is reported, with a retry, not left "Joining…".
const JOIN_TIMEOUT_MS = 15000;
const STATS_INTERVAL_MS = 400;

const DEVICE_PROBLEMS = {
  NotAllowedError: "permission to use it was refused",
  SecurityError: "permission to use it was refused",
  NotFoundError: "none was found",
  OverconstrainedError: "the chosen one is gone",
  NotReadableError: "another application is using it",
};
const DEVICE_NAMES = { audio: "microphone", video: "camera" };

function el(id) {
  return document.getElementById(id);
}

export class MeetingCall {
  constructor(slug) {
    this.slug = slug;
    this.stage = el("stage");
    this.tiles = el("tiles");
    this.preview = el("preview");
    this.buttons = {
      mic: el("toggle-mic"), camera: el("toggle-camera"), screen: el("toggle-screen"),
      captions: el("toggle-captions"), join: el("join-call"), leave: el("leave-call"),
    };
    this.selects = { audio: el("mic-select"), video: el("camera-select"),
                     speaker: el("speaker-select") };
    this.statusEl = el("call-status");
    this.notice = el("device-notice");
    this.listenOnlyBox = el("listen-only");

    this.phase = "prejoin"; // prejoin | joining | in-call | left | failed
    this.want = { audio: true, video: true }; // what the person asked for
    this.problems = { audio: null, video: null }; // why a device is unavailable
    this.deviceIds = { audio: "", video: "", speaker: "" };
    this.local = { audio: null, video: null, screen: null }; // live local tracks
    this.usedTracks = []; // every local track this page started (tests check they end)
    this.socket = null;
    this.hello = null;
    this.iceServers = [];
    this.iceTransportPolicy = "all";
    this.publishPc = null;
    this.subscribePc = null;
    this.senders = { audio: null, video: null, screen: null };
    this.screenMid = null;
    this.tracksByMid = new Map();
    this.participants = [];
    this.captionsOn = false;
    this.pinned = null; // tile key shown large on request
    this.joinTimer = null;
    this.statsTimer = null;
    this.republished = false;
    this.mediaFailed = false;
    this.joinedOnServer = false;
    this.wire();
  }

  // --- page wiring ------------------------------------------------------------------------
  wire() {
    const b = this.buttons;
    b.mic.addEventListener("click", () => this.setMicrophone(!this.isOn("audio")));
    b.camera.addEventListener("click", () => this.setCamera(!this.isOn("video")));
    b.screen.addEventListener("click", () => (this.local.screen ? this.stopShare()
      : this.startShare()));
    b.captions.addEventListener("click", () => this.send({ type: "captions",
                                                            on: !this.captionsOn }));
    b.join.addEventListener("click", () => this.join());
    b.leave.addEventListener("click", () => this.leave());
    this.listenOnlyBox.addEventListener("change", () => this.setListenOnly(
      this.listenOnlyBox.checked));
    for (const kind of ["audio", "video"]) {
      this.selects[kind].addEventListener("change", () => this.switchDevice(
        kind, this.selects[kind].value));
    }
    const canChooseOutput = "setSinkId" in HTMLMediaElement.prototype;
    for (const node of this.stage.querySelectorAll("[data-sink]")) node.hidden = !canChooseOutput;
    this.selects.speaker.addEventListener("change", () => this.setSpeaker(
      this.selects.speaker.value));
    navigator.mediaDevices?.addEventListener?.("devicechange", () => this.listDevices());
    document.addEventListener("keydown", (event) => {
      if (!(event.ctrlKey || event.metaKey) || event.altKey || event.shiftKey) return;
      const key = event.key.toLowerCase();
      if (key === "d") {
        event.preventDefault();
        b.mic.click();
      } else if (key === "e") {
        event.preventDefault();
        b.camera.click();
      }
    });
    window.addEventListener("pagehide", () => this.stopLocalTracks());
  }

  // Show the preview at once when the browser already allows camera and microphone;
  // otherwise wait for the person (a permission prompt on arrival would be rude on a chat page).
  async start() {
    const me = document.getElementById("room").dataset;
    const face = el("preview-tile").querySelector(".avatar");
    face.textContent = initialsOf(me.me);
    face.style.backgroundColor = colourOf(me.meId);
    this.render();
    let granted = false;
    try {
      const [camera, microphone] = await Promise.all(["camera", "microphone"].map(
        (name) => navigator.permissions.query({ name })));
      granted = camera.state === "granted" && microphone.state === "granted";
    } catch {
      granted = false;
    }
    if (granted) await this.startPreview();
    else this.say("Camera and microphone start when you join (your browser will ask).");
    await this.listDevices();
  }

  isOn(kind) {
    return Boolean(this.local[kind]) && this.want[kind] && this.local[kind].enabled;
  }

  // --- local devices ----------------------------------------------------------------------
  async acquire(kind) {
    if (!navigator.mediaDevices?.getUserMedia) {
      this.problems[kind] = "this browser gives the page no access to it";
      return null;
    }
    const id = this.deviceIds[kind];
    const constraint = id ? { deviceId: { exact: id } } : true;
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ [kind]: constraint });
      const track = stream.getTracks()[0];
      this.problems[kind] = null;
      this.usedTracks.push(track);
      track.addEventListener("ended", () => this.onTrackEnded(kind, track));
      return track;
    } catch (error) {
      this.problems[kind] = DEVICE_PROBLEMS[error.name] || error.message || "it failed";
      return null;
    }
  }

  // A device unplugged (or its permission revoked) ends its track.
  onTrackEnded(kind, track) {
    if (this.local[kind] !== track) return;
    this.local[kind] = null;
    this.problems[kind] = "it stopped (unplugged?)";
    this.replaceSender(kind, null);
    this.sendMute();
    this.render();
  }

  // One acquisition at a time: the page's start and an immediate join (?join=call) must not
  // both open a microphone (the second would never be stopped).
  startPreview() {
    if (!this.previewing) {
      this.previewing = this.acquirePreview().finally(() => { this.previewing = null; });
    }
    return this.previewing;
  }

  async acquirePreview() {
    if (this.listenOnlyBox.checked) return;
    await Promise.all(["audio", "video"].map(async (kind) => {
      if (this.want[kind] && !this.local[kind]) this.local[kind] = await this.acquire(kind);
    }));
    if (this.local.audio) this.local.audio.enabled = this.want.audio;
    await this.listDevices();
    this.render();
  }

  async setMicrophone(on) {
    this.want.audio = on;
    if (on) this.listenOnlyBox.checked = false;
    if (on && !this.local.audio) this.local.audio = await this.acquire("audio");
    // Muting keeps the microphone open (unmuting is instant); the track sends silence.
    if (this.local.audio) this.local.audio.enabled = on;
    await this.afterLocalChange("audio");
  }

  async setCamera(on) {
    this.want.video = on;
    if (on) this.listenOnlyBox.checked = false;
    if (on && !this.local.video) {
      this.local.video = await this.acquire("video");
    } else if (!on && this.local.video) {
      this.local.video.stop(); // camera light off
      this.local.video = null;
    }
    await this.afterLocalChange("video");
  }

  async afterLocalChange(kind) {
    if (this.phase === "in-call" || this.phase === "joining") {
      if (!this.publishPc && (this.local.audio || this.local.video)) await this.publishFresh();
      else await this.replaceSender(kind, this.local[kind]);
      this.sendMute();
    }
    await this.listDevices();
    this.render();
  }

  setListenOnly(on) {
    if (on) {
      this.want = { audio: false, video: false };
      this.stopLocalTracks({ keepScreen: true });
      this.render();
    } else {
      this.want = { audio: true, video: true };
      this.startPreview();
    }
  }

  async switchDevice(kind, deviceId) {
    this.deviceIds[kind] = deviceId;
    if (!this.local[kind]) return;
    const old = this.local[kind];
    const track = await this.acquire(kind);
    if (!track) {
      this.render();
      return;
    }
    track.enabled = old.enabled;
    this.local[kind] = track;
    await this.replaceSender(kind, track);
    old.stop();
    this.render();
  }

  setSpeaker(deviceId) {
    this.deviceIds.speaker = deviceId;
    for (const video of this.tiles.querySelectorAll("video")) {
      if (video.setSinkId) video.setSinkId(deviceId).catch(() => {});
    }
  }

  async listDevices() {
    if (!navigator.mediaDevices?.enumerateDevices) return;
    const devices = await navigator.mediaDevices.enumerateDevices();
    const fill = (select, kind, current) => {
      const options = devices.filter((d) => d.kind === kind && d.deviceId);
      const chosen = current || select.value;
      select.replaceChildren(...(options.length ? options : [{ deviceId: "", label: "" }]).map(
        (device, index) => {
          const option = document.createElement("option");
          option.value = device.deviceId;
          option.textContent = device.label || (device.deviceId ? `Device ${index + 1}`
            : "Default (allow access to choose)");
          option.selected = device.deviceId === chosen;
          return option;
        }));
    };
    const inUse = (kind) => this.local[kind]?.getSettings().deviceId || this.deviceIds[kind];
    fill(this.selects.audio, "audioinput", inUse("audio"));
    fill(this.selects.video, "videoinput", inUse("video"));
    fill(this.selects.speaker, "audiooutput", this.deviceIds.speaker);
  }

  stopLocalTracks({ keepScreen = false } = {}) {
    for (const kind of keepScreen ? ["audio", "video"] : ["audio", "video", "screen"]) {
      if (this.local[kind]) this.local[kind].stop();
      this.local[kind] = null;
    }
  }

  // --- joining and leaving ----------------------------------------------------------------
  async join() {
    this.phase = "joining";
    this.mediaFailed = false;
    this.republished = false;
    this.buttons.join.hidden = true;
    this.setStatus("joining", "Joining…");
    if (!this.listenOnlyBox.checked) await this.startPreview();
    const listening = !this.local.audio && !this.local.video;
    if (listening && !this.listenOnlyBox.checked) {
      this.say(`You are listening only: ${this.deviceProblemText()}.`);
    }
    clearTimeout(this.joinTimer);
    this.joinTimer = setTimeout(() => {
      if (this.phase === "joining") this.offerRetry("The call server did not answer.");
    }, JOIN_TIMEOUT_MS);
    if (!this.socket) {
      this.socket = sfuSocket(this.slug, (event) => this.onEvent(event));
      this.socket.start(); // `hello` sends the join
    } else if (this.hello) {
      await this.sendJoin();
    }
    this.render();
  }

  async sendJoin() {
    this.closeConnections();
    // A retry while the server still has us (media failed): leave first, or the join is
    // refused (already_joined).
    if (this.joinedOnServer) this.send({ type: "leave" });
    this.joinedOnServer = false;
    this.send({ type: "join" });
    this.newSubscribeConnection();
    if (this.local.audio || this.local.video || this.local.screen) await this.publishFresh();
    this.sendMute();
  }

  leave() {
    this.send({ type: "leave" });
    this.joinedOnServer = false;
    this.closeConnections();
    this.stopLocalTracks();
    this.phase = "left";
    this.participants = [];
    this.setStatus("left", "You left the call.");
    this.say("You left the call; your camera and microphone are off.");
    this.render();
  }

  offerRetry(text) {
    this.phase = "failed";
    this.closeConnections();
    this.setStatus("failed", text);
    this.render();
  }

  // --- the SFU socket ---------------------------------------------------------------------
  send(message) {
    return this.socket ? this.socket.send(message) : false;
  }

  sendMute() {
    const audioOff = !(this.local.audio && this.local.audio.enabled);
    this.send({ type: "mute", audio: audioOff, video: !this.local.video });
  }

  async onEvent(event) {
    switch (event.type) {
      case "socket":
        if (event.state === "connecting") return;
        this.hello = null;
        this.joinedOnServer = false;
        this.closeConnections();
        if (event.retryInSeconds === null) {
          this.phase = "failed";
          this.setStatus("offline", "You cannot join this call.");
        } else if (this.phase === "in-call" || this.phase === "joining") {
          this.phase = "joining";
          this.countDown(event.retryInSeconds);
        }
        this.render();
        return;
      case "hello":
        this.hello = event;
        this.iceServers = event.ice_servers;
        this.iceTransportPolicy = event.ice_transport_policy || "all";
        if (this.phase === "joining" || this.phase === "in-call") await this.sendJoin();
        return;
      case "joined":
        this.joinedOnServer = true;
        clearTimeout(this.joinTimer);
        // Again once the worker has us: a mute sent with the join may have reached the
        // socket before it had a worker to pass it to (not_joined).
        this.sendMute();
        if (this.phase === "joining") {
          this.phase = "in-call";
          this.setStatus("live", "In the call");
          this.startStats();
          this.render();
        }
        return;
      case "publish-answer":
        if (this.publishPc?.signalingState === "have-local-offer") {
          await this.publishPc.setRemoteDescription({ type: "answer", sdp: event.sdp });
        }
        return;
      case "subscribe-offer":
        return this.answerSubscribeOffer(event.sdp);
      case "participants":
        this.participants = event.participants;
        this.captionsOn = Boolean(event.captions);
        this.render();
        return;
      case "worker-lost":
        this.joinedOnServer = false;
        this.closeConnections();
        if (this.phase === "in-call" || this.phase === "joining") {
          this.phase = "joining";
          this.setStatus("reconnecting", "The call server restarted; rejoining…");
          await this.sendJoin();
        }
        return;
      case SfuEvent.SUBSCRIBE_LOST:
        if (this.subscribePc) {
          this.subscribePc.stopIceWatch();
          this.subscribePc.close();
          this.tracksByMid.clear();
          this.newSubscribeConnection();
          this.send({ type: "resubscribe" });
        }
        return;
      case SfuEvent.PUBLISH_LOST:
        if (this.publishPc) await this.publishFresh();
        return;
      case "error":
        return this.onError(event);
      default:
        return undefined;
    }
  }

  async onError(event) {
    console.warn("call error", event.code, event.command, event.message);
    if (event.code === SfuError.WORKER_UNAVAILABLE || event.code === SfuError.CALL_BUSY
        || (event.code === SfuError.SFU_FAILED && event.command === "join")) {
      this.closeConnections();
      this.setStatus("unavailable", event.code === SfuError.WORKER_UNAVAILABLE
        ? "The call server is unreachable; retrying…" : "The call server failed; retrying…");
      setTimeout(() => {
        if (this.phase === "joining" && this.hello) this.sendJoin();
      }, 3000);
    } else if (event.code === SfuError.CALL_FULL) {
      this.offerRetry("This call is full.");
    } else if (event.code === SfuError.PUBLISH_FAILED && this.publishPc && !this.republished) {
      this.republished = true; // once per join: an offer that always fails must not loop
      await this.publishFresh();
    } else if (event.command) {
      this.say(`The call server refused ${event.command}: ${event.message}`);
    }
  }

  // --- peer connections -------------------------------------------------------------------
  newPeerConnection(target) {
    const pc = new RTCPeerConnection({ iceServers: this.iceServers,
                                       iceTransportPolicy: this.iceTransportPolicy,
                                       bundlePolicy: "max-bundle" });
    pc.stopIceWatch = watchIce(pc, {
      relayOnly: this.iceTransportPolicy === "relay",
      // Either connection failing to carry media is said plainly, with a retry (a fresh
      // join); if it connects after all, the retry goes away.
      onProblem: (problem) => {
        if (pc !== this.publishPc && pc !== this.subscribePc) return;
        this.mediaFailed = Boolean(problem);
        if (problem) this.setStatus("media-failed", iceProblemMessage(problem));
        else if (this.phase === "in-call") this.setStatus("live", "In the call");
        this.render();
      },
    });
    pc.onicecandidate = ({ candidate }) => {
      if (candidate && candidate.candidate) {
        this.send({ type: "candidate", target, candidate: candidate.toJSON() });
      }
    };
    return pc;
  }

  newSubscribeConnection() {
    const pc = this.newPeerConnection("subscribe");
    this.subscribePc = pc;
    pc.ontrack = ({ track, transceiver }) => {
      this.tracksByMid.set(transceiver.mid, track);
      track.addEventListener("ended", () => {
        if (this.tracksByMid.get(transceiver.mid) === track) this.tracksByMid.delete(transceiver.mid);
      });
      this.render();
    };
  }

  // A fresh publish connection carrying the microphone and camera sections (tracks or not)
  // and the screen section while sharing; also after publish-lost / publish_failed.
  async publishFresh() {
    if (this.publishPc) {
      this.publishPc.stopIceWatch();
      this.publishPc.close();
    }
    const pc = this.newPeerConnection("publish");
    this.publishPc = pc;
    const add = (trackOrKind) => pc.addTransceiver(trackOrKind, { direction: "sendonly" });
    this.senders.audio = add(this.local.audio || "audio").sender;
    this.senders.video = add(this.local.video || "video").sender;
    this.senders.screen = null;
    this.screenMid = null;
    let screen = null;
    if (this.local.screen) {
      screen = add(this.local.screen);
      this.senders.screen = screen.sender;
    }
    await pc.setLocalDescription(await pc.createOffer());
    if (screen) this.screenMid = screen.mid;
    this.send({ type: "publish", sdp: pc.localDescription.sdp,
                ...(this.screenMid ? { screen: this.screenMid } : {}) });
  }

  async replaceSender(kind, track) {
    const sender = this.senders[kind];
    if (sender && sender.track !== track) await sender.replaceTrack(track);
  }

  async answerSubscribeOffer(sdp) {
    const pc = this.subscribePc;
    if (!pc) return;
    await pc.setRemoteDescription({ type: "offer", sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    this.send({ type: "subscribe-answer", sdp: pc.localDescription.sdp });
  }

  closeConnections() {
    clearTimeout(this.joinTimer);
    clearInterval(this.statsTimer);
    this.statsTimer = null;
    for (const pc of [this.publishPc, this.subscribePc]) {
      if (pc) {
        pc.stopIceWatch();
        pc.close();
      }
    }
    this.publishPc = null;
    this.subscribePc = null;
    this.senders = { audio: null, video: null, screen: null };
    this.screenMid = null;
    this.tracksByMid.clear();
    this.participants = [];
  }

  // --- screen sharing ---------------------------------------------------------------------
  async startShare() {
    if (!navigator.mediaDevices?.getDisplayMedia) {
      this.say("This browser cannot share its screen.");
      return;
    }
    let track;
    try {
      const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
      track = stream.getVideoTracks()[0];
    } catch (error) {
      this.say(error.name === "NotAllowedError" ? "Screen sharing was cancelled."
        : `Screen sharing failed: ${error.message}`);
      return;
    }
    this.usedTracks.push(track);
    track.contentHint = "detail";
    // The browser's own "Stop sharing" ends the track.
    track.addEventListener("ended", () => {
      if (this.local.screen === track) this.stopShare();
    });
    this.local.screen = track;
    if (!this.publishPc) {
      await this.publishFresh();
    } else if (this.senders.screen) {
      await this.senders.screen.replaceTrack(track);
      this.send({ type: "share", on: true });
    } else {
      const transceiver = this.publishPc.addTransceiver(track, { direction: "sendonly" });
      this.senders.screen = transceiver.sender;
      await this.publishPc.setLocalDescription(await this.publishPc.createOffer());
      this.screenMid = transceiver.mid;
      this.send({ type: "publish", sdp: this.publishPc.localDescription.sdp,
                  screen: this.screenMid });
    }
    this.render();
  }

  async stopShare() {
    const track = this.local.screen;
    this.local.screen = null;
    if (track) track.stop();
    if (this.senders.screen) await this.senders.screen.replaceTrack(null);
    this.send({ type: "share", on: false });
    this.render();
  }

  // --- speaking ---------------------------------------------------------------------------
  startStats() {
    clearInterval(this.statsTimer);
    this.statsTimer = setInterval(() => this.markSpeakers().catch(() => {}), STATS_INTERVAL_MS);
  }

  async markSpeakers() {
    const levels = new Map();
    if (this.subscribePc) {
      for (const report of (await this.subscribePc.getStats()).values()) {
        if (report.type === "inbound-rtp" && report.kind === "audio") {
          levels.set(report.mid, report.audioLevel || 0);
        }
      }
    }
    let mine = 0;
    if (this.publishPc && this.local.audio?.enabled) {
      for (const report of (await this.publishPc.getStats()).values()) {
        if (report.type === "media-source" && report.kind === "audio") mine = report.audioLevel || 0;
      }
    }
    for (const person of this.participants) {
      const tile = this.tileOf(person.id);
      if (!tile) continue;
      const level = person.you ? mine : levels.get(person.mids.audio) || 0;
      const speaking = !person.muted.audio && level > SPEAKING_LEVEL;
      tile.classList.toggle("speaking", speaking);
      tile.querySelector(".speaking-label").textContent = speaking ? "speaking" : "";
    }
  }

  // "Connection lost; reconnecting in 3 s…", counting down to the socket's next attempt.
  countDown(seconds) {
    clearInterval(this.countdownTimer);
    let left = seconds;
    const show = () => this.setStatus("reconnecting", left > 0
      ? `Connection lost; reconnecting in ${left} s…` : "Connection lost; reconnecting…");
    show();
    this.countdownTimer = setInterval(() => {
      left -= 1;
      if (this.statusEl.dataset.state !== "reconnecting" || left < 0) {
        clearInterval(this.countdownTimer);
        return;
      }
      show();
    }, 1000);
  }

  // --- rendering --------------------------------------------------------------------------
  setStatus(state, text) {
    this.statusEl.dataset.state = state;
    this.statusEl.textContent = text;
  }

  say(text) {
    this.notice.hidden = !text;
    this.notice.textContent = text || "";
  }

  deviceProblemText() {
    const parts = ["audio", "video"].filter((kind) => this.problems[kind])
      .map((kind) => `${DEVICE_NAMES[kind]}: ${this.problems[kind]}`);
    return parts.length ? parts.join("; ") : "no camera or microphone is available";
  }

  tileOf(key) {
    return this.tiles.querySelector(`[data-tile="${CSS.escape(key)}"]`);
  }

  makeTile(key, label, { screen = false, id = key } = {}) {
    const tile = document.createElement("figure");
    tile.className = screen ? "tile screen" : "tile";
    tile.dataset.tile = key;
    tile.setAttribute("role", screen ? "region" : "group");
    tile.setAttribute("aria-label", label);
    const video = document.createElement("video");
    video.autoplay = true;
    video.playsInline = true;
    const caption = document.createElement("figcaption");
    const name = document.createElement("span");
    name.className = "tile-name";
    const flags = document.createElement("span");
    flags.className = "tile-flags";
    const speaking = document.createElement("span");
    speaking.className = "speaking-label visually-hidden";
    caption.append(name, flags, speaking);
    const pin = document.createElement("button");
    pin.type = "button";
    pin.className = "pin";
    pin.setAttribute("aria-pressed", "false");
    pin.setAttribute("aria-label", screen ? `Show ${label} large` : `Show ${label} large`);
    pin.textContent = "⤢";
    pin.title = "Show large";
    pin.addEventListener("click", () => {
      this.pinned = this.pinned === key ? null : key;
      this.render();
    });
    tile.append(video, avatar(label, id), caption, pin);
    if (this.deviceIds.speaker && video.setSinkId) video.setSinkId(this.deviceIds.speaker).catch(() => {});
    return tile;
  }

  setVideoTracks(video, tracks) {
    const current = video.srcObject ? video.srcObject.getTracks() : [];
    if (tracks.length !== current.length || tracks.some((t, i) => t !== current[i])) {
      video.srcObject = tracks.length ? new MediaStream(tracks) : null;
    }
  }

  render() {
    const inCall = this.phase === "in-call" || this.phase === "joining";
    const b = this.buttons;
    this.stage.dataset.phase = inCall ? "call" : "prejoin";
    el("prejoin").hidden = inCall;
    el("call-area").hidden = !inCall;
    b.join.hidden = inCall && !this.mediaFailed;
    b.join.textContent = this.mediaFailed || this.phase === "failed" ? "Try again" : "Join call";
    b.leave.hidden = !inCall;
    b.screen.hidden = !inCall;
    b.captions.hidden = !inCall;
    for (const [kind, button] of [["audio", b.mic], ["video", b.camera]]) {
      const on = this.isOn(kind);
      button.setAttribute("aria-pressed", String(on));
      button.dataset.problem = this.problems[kind] ? "true" : "false";
    }
    b.screen.setAttribute("aria-pressed", String(Boolean(this.local.screen)));
    b.captions.setAttribute("aria-pressed", String(this.captionsOn));
    if (!inCall && this.phase !== "failed") {
      this.setStatus(this.phase === "left" ? "left" : "idle",
                     this.phase === "left" ? "You left the call." : "Not in the call");
    }
    const previewTile = el("preview-tile");
    previewTile.dataset.videoMuted = String(!this.local.video);
    this.setVideoTracks(this.preview, this.local.video ? [this.local.video] : []);
    if (!inCall && (this.problems.audio || this.problems.video) && !this.listenOnlyBox.checked) {
      this.say(`${this.local.audio || this.local.video ? "" : "You will join listening only. "}`
        + `Unavailable: ${this.deviceProblemText()}.`);
    }
    this.renderTiles(inCall);
  }

  renderTiles(inCall) {
    const present = new Set();
    const ordered = [];
    // Two people of one name in the call: the caption adds a short tag from the member id.
    const shared = sharedNames(this.participants);
    if (inCall) {
      for (const person of this.participants) {
        const label = person.name;
        if ((person.publishing || []).includes("screen") && (person.you || person.mids.screen)) {
          const key = `${person.id}:screen`;
          present.add(key);
          const tile = this.tileOf(key) || this.makeTile(key, `Screen shared by ${label}`,
                                                         { screen: true,
                                                           id: person.participant || person.id });
          tile.querySelector(".tile-name").textContent = person.you ? "Your screen"
            : `${label}'s screen`;
          const track = person.you ? this.local.screen : this.tracksByMid.get(person.mids.screen);
          const video = tile.querySelector("video");
          video.muted = true;
          this.setVideoTracks(video, track ? [track] : []);
          ordered.push(tile);
        }
        present.add(person.id);
        // Coloured by participant id, as in "Here now".
        const tile = this.tileOf(person.id) || this.makeTile(person.id, label, {
          id: person.participant || person.id });
        tile.classList.toggle("me", Boolean(person.you));
        tile.dataset.audioMuted = String(person.muted.audio);
        tile.dataset.videoMuted = String(person.muted.video);
        const tag = shared.has(String(label).toLocaleLowerCase()) ? ` ${tagOf(person.id)}` : "";
        tile.querySelector(".tile-name").textContent = `${label}${tag}${person.you ? " (you)" : ""}`;
        const flags = [person.muted.audio ? "muted" : "", person.muted.video ? "camera off" : ""]
          .filter(Boolean);
        tile.querySelector(".tile-flags").textContent = flags.length ? flags.join(", ") : "";
        const video = tile.querySelector("video");
        if (person.you) {
          video.muted = true;
          this.setVideoTracks(video, this.local.video ? [this.local.video] : []);
        } else {
          this.setVideoTracks(video, ["video", "audio"]
            .map((kind) => this.tracksByMid.get(person.mids[kind])).filter(Boolean));
        }
        ordered.push(tile);
      }
    }
    for (const tile of [...this.tiles.children]) {
      if (!present.has(tile.dataset.tile)) tile.remove();
    }
    if (this.pinned && !present.has(this.pinned)) this.pinned = null;
    // Large: what was asked for, else the newest shared screen.
    const screens = ordered.filter((tile) => tile.classList.contains("screen"));
    const focus = this.pinned || (screens.length ? screens[screens.length - 1].dataset.tile : null);
    for (const tile of ordered) {
      const large = tile.dataset.tile === focus;
      tile.classList.toggle("focus", large);
      tile.querySelector(".pin").setAttribute("aria-pressed", String(this.pinned === tile.dataset.tile));
      if (tile.parentNode !== this.tiles || tile !== this.tiles.children[ordered.indexOf(tile)]) {
        this.tiles.insertBefore(tile, this.tiles.children[ordered.indexOf(tile)] || null);
      }
    }
    this.tiles.dataset.count = String(ordered.length);
    this.tiles.dataset.layout = focus ? "focus" : "grid";
    const size = ordered.length;
    this.tiles.style.setProperty("--columns", String(
      focus ? 1 : size <= 1 ? 1 : size <= 4 ? 2 : size <= 9 ? 3 : 4));
    if (inCall && this.phase === "in-call") {
      const people = this.participants.length;
      this.setStatus(this.statusEl.dataset.state === "media-failed" ? "media-failed" : "live",
                     this.statusEl.dataset.state === "media-failed" ? this.statusEl.textContent
                       : `In the call · ${people} ${people === 1 ? "person" : "people"}`);
    }
  }
}
