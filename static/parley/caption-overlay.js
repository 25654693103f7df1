// The caption overlay (templates/transcription/caption_overlay.html, an OBS browser source):
// the room's caption feed (GET /rooms/<slug>/captions/stream; docs/protocol.md, "Caption feed
// (SSE)") as its last few lines, large. A turn's partial line updates in place and its final
// text replaces it. Query options: lines (1-10, default 3), size (font px, 12-200, default 48),
// names (1 or 0: speakers' names, default 1), hold (seconds a finished line stays, 0 until
// pushed out; default 10).

// A partial line that hears nothing for this long is dropped (its speaker went away mid-turn).
const STALE_PARTIAL_MS = 30000;
// EventSource retries by itself after a dropped stream; a refused one (403, 429) it gives up
// on, so the page retries, from this delay doubling up to the maximum.
const RETRY_FIRST_MS = 3000;
const RETRY_MAX_MS = 60000;

function bounded(value, low, high, fallback) {
  const number = Number.parseInt(value ?? "", 10);
  return Number.isFinite(number) ? Math.min(high, Math.max(low, number)) : fallback;
}

export function overlayOptions(search) {
  const query = new URLSearchParams(search);
  return {
    lines: bounded(query.get("lines"), 1, 10, 3),
    size: bounded(query.get("size"), 12, 200, 48),
    names: query.get("names") !== "0",
    holdMs: bounded(query.get("hold"), 0, 3600, 10) * 1000,
  };
}

export class CaptionOverlay {
  constructor(root, options) {
    this.root = root;
    this.options = options;
    this.lines = []; // oldest first: {item, li, text, timer}
    root.style.setProperty("--size", `${options.size}px`); // CSSOM: allowed by the CSP
  }

  line(item, speaker) {
    let line = this.lines.find((each) => each.item === item);
    if (!line) {
      const li = document.createElement("div");
      li.className = "overlay-line";
      if (this.options.names && speaker?.name) {
        const name = document.createElement("span");
        name.className = "speaker";
        name.textContent = `${speaker.name}:`;
        li.append(name, " "); // a real space: copied or read aloud, name and words stay apart
      }
      const text = document.createElement("span");
      text.className = "text";
      li.append(text);
      line = { item, li, text, timer: null };
      this.lines.push(line);
      this.root.append(li);
      while (this.lines.length > this.options.lines) this.remove(this.lines[0]);
    }
    return line;
  }

  partial({ item_id: item, speaker, text }) {
    if (!text) return; // a turn opening: nothing to read yet
    const line = this.line(item, speaker);
    line.li.classList.add("partial");
    line.text.textContent = text;
    this.expire(line, STALE_PARTIAL_MS);
  }

  final({ item_id: item, speaker, text }) {
    const line = this.line(item, speaker);
    line.li.classList.remove("partial");
    line.text.textContent = text;
    this.expire(line, this.options.holdMs);
  }

  dropped({ item_id: item }) {
    const line = this.lines.find((each) => each.item === item);
    if (line) this.remove(line);
  }

  expire(line, ms) {
    clearTimeout(line.timer);
    line.timer = ms ? setTimeout(() => this.remove(line), ms) : null;
  }

  remove(line) {
    clearTimeout(line.timer);
    line.li.remove();
    this.lines = this.lines.filter((each) => each !== line);
  }
}

export class FeedConnection {
  constructor(url, overlay, root) {
    this.url = url;
    this.overlay = overlay;
    this.root = root;
    this.lastId = null; // the newest final id applied: where a new EventSource resumes
    this.retryMs = RETRY_FIRST_MS;
    this.source = null;
  }

  start() {
    const url = this.lastId === null ? this.url : `${this.url}?after=${this.lastId}`;
    const source = new EventSource(url);
    this.source = source;
    const on = (name, handler) => source.addEventListener(name, (event) => {
      if (event.lastEventId) this.lastId = event.lastEventId;
      handler(JSON.parse(event.data));
    });
    on("partial", (data) => this.overlay.partial(data));
    on("final", (data) => this.overlay.final(data));
    on("dropped", (data) => this.overlay.dropped(data));
    on("ready", () => {
      this.retryMs = RETRY_FIRST_MS;
      this.state("live");
    });
    on("end", ({ code }) => {
      if (code !== "access_revoked") return; // EventSource reconnects by itself
      source.close();
      this.state("ended");
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CONNECTING) {
        this.state("reconnecting");
        return;
      }
      // Refused (or not an event stream): EventSource gave up; try again later.
      source.close();
      this.state("reconnecting");
      setTimeout(() => this.start(), this.retryMs);
      this.retryMs = Math.min(RETRY_MAX_MS, this.retryMs * 2);
    });
  }

  state(value) {
    this.root.dataset.state = value;
  }
}

const root = document.getElementById("caption-overlay");
if (root) {
  const overlay = new CaptionOverlay(root, overlayOptions(window.location.search));
  const connection = new FeedConnection(root.dataset.feed, overlay, root);
  window.parleyOverlay = { overlay, connection };
  connection.start();
}
