// The room assistant's panel (templates/transcription/_assistant.html; docs/assistant.md):
// invite/remove, availability, thinking/speaking state, the answer streaming as it is
// generated (the stored answer then arrives as an ordinary chat message and the preview
// clears), tool-call notices and errors. Room events come through the page's RoomClient
// (its "assistant" event, static/parley/rooms-protocol.js).

export const AssistantEvent = Object.freeze({
  STATE: "assistant.state",
  DELTA: "assistant.delta",
  DONE: "assistant.done",
  TOOL: "assistant.tool",
  ERROR: "assistant.error",
});

const STATE_LABELS = {
  unknown: "checking",
  unavailable: "unavailable",
  absent: "not in the room",
  joining: "joining",
  listening: "listening",
  thinking: "thinking",
  speaking: "speaking",
  leaving: "leaving",
};
const MAX_NOTICES = 6;

export function mountAssistant({ container, roomClient, slug }) {
  const part = (name) => container.querySelector(`[data-${name}]`);
  const inviteButton = container.querySelector("[data-action=invite]");
  const removeButton = container.querySelector("[data-action=remove]");
  const voiceButton = container.querySelector("[data-action=voice]");
  const stateLabel = part("assistant-state");
  const unavailable = part("assistant-unavailable");
  const hint = part("assistant-hint");
  const preview = part("assistant-preview");
  const previewText = part("assistant-preview-text");
  const notices = part("assistant-notices");
  const csrf = container.querySelector("[name=csrfmiddlewaretoken]");
  const base = `/rooms/${encodeURIComponent(slug)}/assistant`;

  function show(state, voice = container.dataset.voice === "on") {
    container.dataset.state = state;
    const present = !["unknown", "unavailable", "absent"].includes(state);
    container.dataset.voice = present && voice ? "on" : "off";
    stateLabel.textContent = (STATE_LABELS[state] || state) + (present && voice ? " (in the call)" : "");
    inviteButton.hidden = state !== "absent";
    removeButton.hidden = !present;
    voiceButton.hidden = !present;
    voiceButton.setAttribute("aria-pressed", String(present && voice));
    voiceButton.textContent = present && voice ? "Take out of the group call" : "Bring into the group call";
    hint.hidden = !present;
    if (!present) clearPreview();
  }

  function clearPreview() {
    preview.hidden = true;
    previewText.textContent = "";
  }

  function notice(text, kind) {
    const li = document.createElement("li");
    li.className = kind;
    li.textContent = text;
    notices.append(li);
    while (notices.children.length > MAX_NOTICES) notices.firstElementChild.remove();
  }

  async function refresh() {
    try {
      const reply = await fetch(base, { headers: { Accept: "application/json" } });
      const status = await reply.json();
      if (!status.available) {
        unavailable.hidden = false;
        unavailable.textContent = `Assistant ${status.reason}`;
        show("unavailable");
        return;
      }
      unavailable.hidden = true;
      if (status.present) {
        if (["unknown", "absent"].includes(container.dataset.state)) show("listening");
      } else {
        show("absent");
      }
    } catch (error) {
      notice(`Could not ask the server about the assistant (${error.message}).`, "error");
    }
  }

  async function act(action, button, body) {
    button.disabled = true;
    try {
      const headers = { "X-CSRFToken": csrf ? csrf.value : "", Accept: "application/json" };
      if (body !== undefined) headers["Content-Type"] = "application/json";
      const reply = await fetch(`${base}/${action}`, {
        method: "POST", headers, body: body === undefined ? undefined : JSON.stringify(body),
      });
      const answer = await reply.json().catch(() => ({}));
      if (!reply.ok) {
        const error = answer.error || {};
        notice(error.message || `The server answered ${reply.status}.`, "error");
        await refresh();
      } else if (action === "invite" && container.dataset.state === "absent") {
        show("joining");
      }
    } catch (error) {
      notice(`The request failed (${error.message}).`, "error");
    } finally {
      button.disabled = false;
    }
  }

  inviteButton.addEventListener("click", () => act("invite", inviteButton));
  removeButton.addEventListener("click", () => act("remove", removeButton));
  voiceButton.addEventListener("click", () =>
    act("voice", voiceButton, { on: container.dataset.voice !== "on" }));

  roomClient.addEventListener("assistant", ({ detail: { event } }) => {
    switch (event.type) {
      case AssistantEvent.STATE:
        show(event.state === "left" ? "absent" : event.state, Boolean(event.voice));
        break;
      case AssistantEvent.DELTA:
        preview.hidden = false;
        previewText.textContent = event.text;
        break;
      case AssistantEvent.DONE:
        clearPreview();
        break;
      case AssistantEvent.TOOL:
        notice(event.ok ? event.summary : `${event.summary}: ${event.message}`,
          event.ok ? "tool" : "tool refused");
        break;
      case AssistantEvent.ERROR:
        notice(event.message, "error");
        break;
      default:
        break;
    }
  });
  // A reconnect may have missed state changes: ask again.
  roomClient.addEventListener("hello", () => refresh());
  refresh();
  return { refresh };
}
