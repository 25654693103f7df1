// The stand-alone direct page (templates/signaling/direct.html): the room's presence, from a
// RoomClient, with "Message <name>" and "Call <name>" for everyone else, and DirectCalls.
// Goes away once the room page itself carries templates/signaling/_direct.html.
import { DirectCalls } from "./direct-calls.js";
import { RoomClient } from "./rooms-protocol.js";

const slug = document.getElementById("direct-page").dataset.slug;
const direct = new DirectCalls({ slug, container: document.getElementById("direct") });
direct.start();

const room = new RoomClient(slug);
const list = document.getElementById("presence");
let me = null;

function button(label, text, onClick) {
  const el = document.createElement("button");
  el.type = "button";
  el.className = "link";
  el.textContent = text;
  el.setAttribute("aria-label", label);
  el.addEventListener("click", onClick);
  return el;
}

room.addEventListener("hello", ({ detail }) => {
  me = detail.hello.you;
});
room.addEventListener("presence", ({ detail: { participants } }) => {
  list.replaceChildren(...participants.map((p) => {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = p.name + (me && p.id === me.id ? " (you)" : "");
    li.append(name);
    if (!me || p.id !== me.id) {
      const person = { id: p.id, name: p.name };
      li.append(" ", button(`Message ${p.name}`, "Message", () => direct.message(person)),
        " ", button(`Call ${p.name}`, "Call", () => direct.call(person)));
    }
    return li;
  }));
});
room.start();
