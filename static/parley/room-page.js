// The room page: renders a RoomClient's chat, presence and connection status.
import { RoomClient, MAX_TEXT_CHARS } from "./rooms-protocol.js";
import { CaptionBoard } from "./captions.js";
import { wireInviteLink } from "./invite-link.js";

const root = document.getElementById("room");
const list = document.getElementById("messages");
const presenceList = document.getElementById("presence");
const status = document.getElementById("status");
const notice = document.getElementById("notice");
const form = document.getElementById("send-form");
const input = document.getElementById("send-text");

const client = new RoomClient(root.dataset.slug);
window.parleyRoom = client; // for debugging and browser tests

const STATE_LABELS = {
  connecting: () => "connecting",
  live: () => "live",
  reconnecting: (s) => (s > 0 ? `reconnecting in ${s}s` : "reconnecting"),
  offline: () => "offline",
};

function timeOf(iso) {
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function messageItem({ seq, author, text, sent_at: sentAt }, pending = false) {
  const li = document.createElement("li");
  li.className = pending ? "message pending" : "message";
  if (seq) li.dataset.seq = seq;
  const who = document.createElement("span");
  who.className = "author";
  who.textContent = author.name;
  const when = document.createElement("time");
  when.textContent = pending ? "sending…" : timeOf(sentAt);
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  li.append(who, when, body);
  return li;
}

function scrollIfNear(el) {
  return el.scrollHeight - el.scrollTop - el.clientHeight < 80;
}

let me = null;

client.addEventListener("hello", ({ detail }) => {
  me = detail.hello.you;
  input.maxLength = detail.hello.limits?.max_text_chars || MAX_TEXT_CHARS;
});

client.addEventListener("reset", () => {
  list.querySelectorAll("li.message:not(.pending)").forEach((li) => li.remove());
});

client.addEventListener("message", ({ detail: { message } }) => {
  const stick = scrollIfNear(list);
  const firstPending = list.querySelector("li.pending");
  list.insertBefore(messageItem(message), firstPending);
  if (stick) list.scrollTop = list.scrollHeight;
});

client.addEventListener("pending", ({ detail: { pending } }) => {
  list.querySelectorAll("li.pending").forEach((li) => li.remove());
  for (const item of pending) {
    list.append(messageItem({ author: { name: me ? me.name : "you" }, text: item.text }, true));
  }
});

client.addEventListener("presence", ({ detail: { participants } }) => {
  presenceList.replaceChildren(
    ...participants.map((p) => {
      const li = document.createElement("li");
      li.textContent = p.name + (me && p.id === me.id ? " (you)" : "");
      li.dataset.id = p.id;
      return li;
    }),
  );
});

client.addEventListener("state", ({ detail: { state, retryInSeconds } }) => {
  status.dataset.state = state;
  status.textContent = STATE_LABELS[state](retryInSeconds);
});

client.addEventListener("error", ({ detail: { error } }) => {
  notice.hidden = false;
  notice.textContent = error.message;
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => { notice.hidden = true; }, 5000);
});

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = input.value.trim();
  if (!text) return;
  client.send(text);
  input.value = "";
});

const board = new CaptionBoard(document.getElementById("captions"), root.dataset.slug);
client.addEventListener("caption", ({ detail }) => board.onCaption(detail.caption));
client.addEventListener("caption-error", ({ detail }) => board.onError(detail.error));
board.loadRecent();

client.start();

wireInviteLink(document.getElementById("copy-invite"), document.getElementById("invite-url"),
  document.getElementById("invite-copied"));
