// The Realtime API's WebRTC mode: the microphone track and an `oai-events` data channel to
// OpenAI (or Parley's own /v1/realtime/calls), the SDP offer posted with an ephemeral key.
// Events dispatched as RealtimeConnection's: "event" {event}, "state" {state, code, reason}.
import { RealtimeConnection } from "./realtime-protocol.js";

export const EVENTS_CHANNEL = "oai-events";

export class RealtimeCall extends RealtimeConnection {
  constructor(callsUrl, key, { session = null, iceServers = [] } = {}) {
    super();
    this.callsUrl = callsUrl;
    this.key = key;
    this.session = session;
    this.iceServers = iceServers;
    this.pc = null;
    this.channel = null;
    this.stream = null;
    this.location = null;
  }

  // Resolves once the answer is applied; rejects with an Error whose `code` is the API's
  // error code (e.g. "invalid_api_key" for an expired key).
  async open(stream) {
    this.stream = stream;
    this.emit("state", { state: "connecting" });
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    this.pc = pc;
    for (const track of stream.getAudioTracks()) pc.addTrack(track, stream);
    const channel = pc.createDataChannel(EVENTS_CHANNEL);
    this.channel = channel;
    channel.onopen = () => {
      if (this.session) this.send({ type: "session.update", session: this.session });
      this.emit("state", { state: "open" });
    };
    channel.onmessage = ({ data }) => this.receive(data);
    channel.onclose = () => this.emit("state", { state: "closed", code: 1000 });
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed") {
        this.emit("state", { state: "closed", code: 1006, reason: "connection failed" });
      }
    };
    await pc.setLocalDescription(await pc.createOffer());
    const reply = await fetch(this.callsUrl, {
      method: "POST",
      headers: { Authorization: `Bearer ${this.key}`, "Content-Type": "application/sdp" },
      body: pc.localDescription.sdp,
    });
    if (reply.status !== 201) {
      const body = await reply.json().catch(() => ({}));
      const error = new Error(body.error?.message || `the call was refused (HTTP ${reply.status})`);
      error.code = body.error?.code || `http_${reply.status}`;
      this.close();
      throw error;
    }
    this.location = reply.headers.get("Location");
    await pc.setRemoteDescription({ type: "answer", sdp: await reply.text() });
  }

  send(event) {
    if (this.channel?.readyState === "open") this.channel.send(JSON.stringify(event));
  }

  close() {
    this.channel?.close();
    this.pc?.close();
    this.pc = this.channel = null;
  }
}
