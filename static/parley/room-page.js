// The room page, which is the meeting (issue #14): chat, "Here now" (with "Message <name>" and
// "Call <name>"), the call stage (meeting-call.js), live captions under it and the transcript.
// One RoomClient (chat, presence, captions, the assistant's events) for the page's life; the
// call, the direct conversations and the assistant panel own their own sockets.
import { RoomClient, MAX_TEXT_CHARS } from "./rooms-protocol.js";
import { CaptionBoard } from "./captions.js";
import { wireInviteLink } from "./invite-link.js";
import { MeetingCall } from "./meeting-call.js";
import { mountCaptionMic } from "./caption-mic.js";
import { avatar, sharedNames, tagOf } from "./people.js";

const root = document.getElementById("room");
const slug = root.dataset.slug;
const list = document.getElementById("messages");
const presenceList = document.getElementById("presence");
const presenceCount = document.getElementById("presence-count");
const status = document.getElementById("status");
const notice = document.getElementById("notice");
const form = document.getElementById("send-form");
const input = document.getElementById("send-text");

const client = new RoomClient(slug);
window.parleyRoom = client; // for debugging and browser tests

const STATE_LABELS = {
  connecting: () => "connecting",
  live: () => "live",
  reconnecting: (s) => (s > 0 ? `reconnecting in ${s} s` : "reconnecting"),
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
  if (!pending) when.dateTime = sentAt;
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
// The direct conversations (signaling app) and the assistant (transcription app) are
// loaded on their own: a failure in one never takes the room's chat down with it. A click on
// "Message <name>" before the module is there waits for it.
const directReady = import("./direct-calls.js").then(({ DirectCalls }) => {
  const direct = new DirectCalls({ slug, container: document.getElementById("direct") });
  direct.start();
  window.addEventListener("pagehide", () => direct.close());
  return direct;
});
directReady.catch((error) => console.error("direct calls unavailable", error));

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

// --- "Here now" -------------------------------------------------------------------------
function actionButton(label, action) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "link person-action";
  button.textContent = label.split(" ")[0];
  button.setAttribute("aria-label", label);
  button.title = label;
  button.addEventListener("click", action);
  return button;
}

function personItem(person, shared) {
  const li = document.createElement("li");
  li.dataset.id = person.id;
  const isMe = me && person.id === me.id;
  const isAssistant = person.kind === "assistant";
  li.append(avatar(person.name, person.id));
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = person.name;
  li.append(name);
  if (shared.has(String(person.name).toLocaleLowerCase())) {
    const tag = document.createElement("span");
    tag.className = "tag";
    tag.textContent = tagOf(person.id);
    tag.title = "Another person here has the same name";
    li.append(tag);
  }
  if (isMe) li.append(Object.assign(document.createElement("span"),
                                    { className: "hint", textContent: "(you)" }));
  if (isAssistant) li.append(Object.assign(document.createElement("span"),
                                           { className: "badge", textContent: "assistant" }));
  if (!isMe && !isAssistant) {
    const actions = document.createElement("span");
    actions.className = "person-actions";
    const who = { id: person.id, name: person.name };
    actions.append(
      actionButton(`Message ${person.name}`, () => directReady.then((d) => d.message(who))),
      actionButton(`Call ${person.name}`, () => directReady.then((d) => d.call(who))),
    );
    li.append(actions);
  }
  return li;
}

client.addEventListener("presence", ({ detail: { participants } }) => {
  const shared = sharedNames(participants);
  presenceList.replaceChildren(...participants.map((p) => personItem(p, shared)));
  presenceCount.textContent = `(${participants.length})`;
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

// --- captions and the transcript ------------------------------------------------------------
const board = new CaptionBoard(document.getElementById("captions"), slug,
                               { live: document.getElementById("live-captions") });
client.addEventListener("caption", ({ detail }) => board.onCaption(detail.caption));
client.addEventListener("caption-error", ({ detail }) => board.onError(detail.error));
board.loadRecent();

client.start();

// --- the call, direct conversations, the assistant ----------------------------------------
const call = new MeetingCall(slug);
window.parleyCall = call; // for debugging and browser tests
call.start();
if (new URLSearchParams(window.location.search).get("join") === "call") call.join();

const csrfToken = document.querySelector("[name=csrfmiddlewaretoken]").value;
window.parleyCaptions = { board, room: client, mic: mountCaptionMic(slug, csrfToken) };

wireInviteLink(document.getElementById("copy-invite"), document.getElementById("invite-url"),
  document.getElementById("invite-copied"));

const assistantRoot = document.getElementById("assistant");
if (assistantRoot) {
  import("./assistant-panel.js").then(({ mountAssistant }) => {
    mountAssistant({ container: assistantRoot, roomClient: client, slug });
  }).catch((error) => console.error("assistant panel unavailable", error));
}
