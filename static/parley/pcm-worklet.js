// AudioWorklet processor: the microphone as PCM16 mono chunks at the context's sample rate.
// The page makes the AudioContext run at 24 kHz, so Chromium resamples the microphone and
// this only converts float samples to 16-bit integers and batches them (100 ms per message,
// which is what the Realtime API's appends carry well).
class Pcm16Capture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.size = options.processorOptions?.chunkSamples || 2400;
    this.chunk = new Int16Array(this.size);
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0]?.[0];
    if (!channel) return true;
    for (let i = 0; i < channel.length; i++) {
      const sample = Math.max(-1, Math.min(1, channel[i]));
      this.chunk[this.filled++] = sample < 0 ? sample * 0x8000 : sample * 0x7fff;
      if (this.filled === this.size) {
        // Transferred, not copied: the old array is detached, so a new one takes its place.
        this.port.postMessage(this.chunk.buffer, [this.chunk.buffer]);
        this.chunk = new Int16Array(this.size);
        this.filled = 0;
      }
    }
    return true;
  }
}

registerProcessor("pcm16-capture", Pcm16Capture);
