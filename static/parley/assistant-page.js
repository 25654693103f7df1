// The assistant's own page (templates/transcription/assistant_page.html): the panel, the
// room's chat (every message, the assistant's answers among them) and a field whose text is
// sent as "@assistant <text>".
import { RoomClient } from "./rooms-protocol.js";
import { mountAssistant } from "./assistant-panel.js";

const root = document.getElementById("room");
const slug = root.dataset.slug;
const list = document.getElementById("messages");
const status = document.getElementById("status");
const form = document.getElementById("ask-form");
const input = document.getElementById("ask-text");
const client = new RoomClient(slug);

function item(message) {
  const li = document.createElement("li");
  li.className = "message";
  const author = document.createElement("span");
  author.className = "author";
  author.textContent = message.author.name;
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = message.text;
  li.append(author, " ", text);
  return li;
}

client.addEventListener("reset", () => list.replaceChildren());
client.addEventListener("message", ({ detail: { message } }) => {
  list.append(item(message));
  list.scrollTop = list.scrollHeight;
});
client.addEventListener("state", ({ detail: { state } }) => {
  status.dataset.state = state;
  status.textContent = state;
});
form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = input.value.trim();
  if (!text) return;
  client.send(`@assistant ${text}`);
  input.value = "";
});

mountAssistant({ container: document.getElementById("assistant"), roomClient: client, slug });
client.start();
