// A WebSocket that comes back: reconnects with back-off (except after a terminal close code)
// and hands every event to `onEvent` one at a time, in order, each awaited before the next.
// Besides the server's JSON events, `onEvent` receives
// {type: "socket", state: "connecting"|"closed", code, retryInSeconds (null: gave up)}.
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;

export class EventSocket {
  constructor(url, onEvent, { terminalCodes = [] } = {}) {
    this.url = url;
    this.onEvent = onEvent;
    this.terminalCodes = new Set(terminalCodes);
    this.queue = Promise.resolve();
    this.attempt = 0;
    this.stopped = false;
  }

  start() {
    if (this.stopped) return;
    this.deliver({ type: "socket", state: "connecting" });
    const socket = new WebSocket(this.url);
    this.socket = socket;
    socket.onopen = () => {
      this.attempt = 0;
    };
    socket.onmessage = (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      this.deliver(event);
    };
    socket.onclose = (event) => {
      if (this.socket !== socket || this.stopped) return;
      if (this.terminalCodes.has(event.code)) {
        this.stopped = true;
        this.deliver({ type: "socket", state: "closed", code: event.code, retryInSeconds: null });
        return;
      }
      this.attempt += 1;
      const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (this.attempt - 1));
      this.deliver({ type: "socket", state: "closed", code: event.code,
                     retryInSeconds: Math.ceil(delay / 1000) });
      setTimeout(() => this.start(), delay);
    };
  }

  deliver(event) {
    this.queue = this.queue.then(() => this.onEvent(event)).catch((error) => {
      console.error("socket event failed", event.type, error);
    });
  }

  send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  stop() {
    this.stopped = true;
    if (this.socket) this.socket.close(1000);
  }
}
