// The captions page: everyone's live captions (room socket -> CaptionBoard), and this
// member's microphone as a caption source (caption-mic.js).
import { RoomClient } from "./rooms-protocol.js";
import { CaptionBoard } from "./captions.js";
import { mountCaptionMic } from "./caption-mic.js";

const root = document.getElementById("captions-page");
const slug = root.dataset.slug;
const status = document.getElementById("status");
const csrfToken = document.querySelector("[name=csrfmiddlewaretoken]").value;

const board = new CaptionBoard(document.getElementById("captions"), slug);
const room = new RoomClient(slug);
room.addEventListener("caption", ({ detail }) => board.onCaption(detail.caption));
room.addEventListener("caption-error", ({ detail }) => board.onError(detail.error));
room.addEventListener("state", ({ detail: { state } }) => {
  status.dataset.state = state;
  status.textContent = state;
});
board.loadRecent();
room.start();

const mic = mountCaptionMic(slug, csrfToken);
window.parleyCaptions = { board, room, mic }; // for debugging and browser tests
