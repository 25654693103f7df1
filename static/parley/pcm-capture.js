// Microphone capture for transcription: getUserMedia -> AudioContext at 24 kHz ->
// AudioWorklet (pcm-worklet.js) -> PCM16 mono 24 kHz chunks handed to `onChunk`.
export const PCM_RATE = 24000;

export class MicrophoneCapture {
  // Browser audio processing alters speech enough to cost recognition accuracy, and the
  // captions page plays no remote audio to cancel: off unless asked for.
  constructor(onChunk, { chunkMs = 100, processing = false } = {}) {
    this.onChunk = onChunk;
    this.processing = processing;
    this.chunkSamples = Math.round((PCM_RATE * chunkMs) / 1000);
    this.stream = null;
    this.context = null;
    this.node = null;
  }

  async start() {
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: {
        channelCount: 1,
        echoCancellation: this.processing,
        noiseSuppression: this.processing,
        autoGainControl: this.processing,
      },
    });
    this.context = new AudioContext({ sampleRate: PCM_RATE });
    await this.context.audioWorklet.addModule(new URL("./pcm-worklet.js", import.meta.url));
    const source = this.context.createMediaStreamSource(this.stream);
    this.node = new AudioWorkletNode(this.context, "pcm16-capture", {
      processorOptions: { chunkSamples: this.chunkSamples },
    });
    this.node.port.onmessage = ({ data }) => this.onChunk(data);
    // Pulled by the destination through a muted gain, so nothing is heard and the graph runs.
    const mute = this.context.createGain();
    mute.gain.value = 0;
    source.connect(this.node).connect(mute).connect(this.context.destination);
    await this.context.resume();
  }

  async stop() {
    this.node?.port.close();
    this.node?.disconnect();
    this.stream?.getTracks().forEach((track) => track.stop());
    await this.context?.close().catch(() => {});
    this.node = this.context = this.stream = null;
  }
}
