// Shared live captions (docs/transcription.md): live lines per speaker and a transcript
// panel with copy, clear (for me) and downloads. Fed with the room socket's `caption` and
// `caption.error` events (RoomClient); the recent transcript comes from
// /rooms/<slug>/transcript.json so late joiners see what was said.

// A final caption whose previous turn (same speaker) is still open waits this long for it:
// turns can complete out of order, and the transcript keeps them in spoken order.
const HOLD_MS = 4000;

export class CaptionBoard {
  // `live`: where the live lines go when not inside `root` (the room page shows them under
  // the call stage).
  constructor(root, slug, { storage = window.localStorage, live = null } = {}) {
    this.root = root;
    this.slug = slug;
    this.storage = storage;
    this.liveList = (live || root).querySelector("[data-captions-live]");
    this.transcript = root.querySelector("[data-captions-transcript]");
    this.notice = root.querySelector("[data-captions-notice]");
    this.clearedKey = `parley.captions.cleared.${slug}`;
    this.live = new Map(); // speaker id -> {item, text, li}
    this.open = new Set(); // item ids seen but not final
    this.shown = new Set(); // item ids in the transcript
    this.held = new Map(); // previous item id -> [{caption, timer}]
    root.querySelector("[data-action=copy]")?.addEventListener("click", () => this.copy());
    root.querySelector("[data-action=clear]")?.addEventListener("click", () => this.clear());
  }

  async loadRecent() {
    const reply = await fetch(`/rooms/${encodeURIComponent(this.slug)}/transcript.json`, {
      credentials: "same-origin",
    });
    if (!reply.ok) return;
    const { segments } = await reply.json();
    const clearedAt = this.storage.getItem(this.clearedKey);
    for (const segment of segments) {
      if (clearedAt && segment.ended_at <= clearedAt) continue;
      this.show({ ...segment, final: true });
    }
  }

  onCaption(caption) {
    if (caption.final) return this.onFinal(caption);
    this.open.add(caption.item_id);
    const line = this.liveLine(caption.speaker);
    if (line.item !== caption.item_id) {
      line.item = caption.item_id;
      line.text = "";
    }
    line.text += caption.text;
    line.li.querySelector(".text").textContent = line.text || "…";
    line.li.classList.add("speaking");
    return undefined;
  }

  onFinal(caption) {
    const line = this.live.get(caption.speaker.id);
    if (line && line.item === caption.item_id) {
      line.item = null;
      line.text = "";
      line.li.querySelector(".text").textContent = "";
      line.li.classList.remove("speaking");
    }
    const previous = caption.previous_item_id;
    if (previous && this.open.has(previous) && !this.shown.has(previous)) {
      const timer = setTimeout(() => this.release(previous, true), HOLD_MS);
      const waiting = this.held.get(previous) || [];
      waiting.push({ caption, timer });
      this.held.set(previous, waiting);
      return;
    }
    this.settle(caption);
  }

  settle(caption) {
    this.open.delete(caption.item_id);
    if (!caption.failed && caption.text) this.show(caption);
    this.shown.add(caption.item_id);
    this.release(caption.item_id, false);
  }

  release(itemId, timedOut) {
    const waiting = this.held.get(itemId);
    if (!waiting) return;
    this.held.delete(itemId);
    if (timedOut) this.open.delete(itemId);
    for (const { caption, timer } of waiting) {
      clearTimeout(timer);
      this.settle(caption);
    }
  }

  onError({ speaker, message }) {
    if (!this.notice) return;
    this.notice.hidden = false;
    this.notice.textContent = `Captions for ${speaker.name}: ${message}`;
  }

  show(caption) {
    if (this.shown.has(caption.item_id) && this.transcript.querySelector(
      `[data-item="${CSS.escape(caption.item_id)}"]`)) return;
    const li = document.createElement("li");
    li.dataset.item = caption.item_id;
    li.dataset.speaker = caption.speaker.id;
    const who = document.createElement("span");
    who.className = "author";
    who.textContent = caption.speaker.name;
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = caption.text;
    li.append(who, body);
    const stick = this.transcript.scrollHeight - this.transcript.scrollTop
      - this.transcript.clientHeight < 80;
    this.transcript.append(li);
    this.shown.add(caption.item_id);
    if (stick) this.transcript.scrollTop = this.transcript.scrollHeight;
  }

  liveLine(speaker) {
    let line = this.live.get(speaker.id);
    if (!line) {
      const li = document.createElement("li");
      li.dataset.speaker = speaker.id;
      const who = document.createElement("span");
      who.className = "author";
      who.textContent = speaker.name;
      const body = document.createElement("span");
      body.className = "text";
      li.append(who, body);
      this.liveList.append(li);
      line = { item: null, text: "", li };
      this.live.set(speaker.id, line);
    }
    return line;
  }

  text() {
    return [...this.transcript.querySelectorAll("li")].map((li) =>
      `${li.querySelector(".author").textContent}: ${li.querySelector(".text").textContent}`)
      .join("\n");
  }

  async copy() {
    const button = this.root.querySelector("[data-action=copy]");
    const result = this.root.querySelector("[data-copy-result]");
    let said;
    try {
      await navigator.clipboard.writeText(this.text());
      button.dataset.done = "copied";
      said = "Copied to the clipboard";
    } catch {
      button.dataset.done = "failed";
      said = "Could not copy: select the transcript and press Ctrl+C (⌘C)";
    }
    if (result) {
      result.textContent = said;
      clearTimeout(this.copyTimer);
      this.copyTimer = setTimeout(() => { result.textContent = ""; }, 4000);
    }
  }

  clear() {
    this.storage.setItem(this.clearedKey, new Date().toISOString());
    this.transcript.replaceChildren();
  }
}
