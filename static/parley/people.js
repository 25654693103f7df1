// How a person looks on the room page: initials and a stable colour from their participant id,
// so two different people with the same display name stay distinguishable (issue #14), and a
// short tag from the id for the same purpose in text.

export function initialsOf(name) {
  const words = String(name || "?").trim().split(/\s+/).filter(Boolean);
  const first = Array.from(words[0] || "?")[0] || "?";
  const second = words.length > 1 ? Array.from(words[words.length - 1])[0] : "";
  return (first + second).toUpperCase();
}

function hashOf(text) {
  let hash = 2166136261;
  for (let i = 0; i < text.length; i += 1) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 16777619);
  }
  return hash >>> 0;
}

// Dark enough for white initials (WCAG AA for large text) at any hue.
export function colourOf(id) {
  return `hsl(${hashOf(String(id)) % 360} 60% 36%)`;
}

// "#3fa2": shown beside a name that someone else in the room also has.
export function tagOf(id) {
  return `#${String(id).slice(0, 4)}`;
}

export function avatar(name, id, className = "avatar") {
  const span = document.createElement("span");
  span.className = className;
  span.setAttribute("aria-hidden", "true");
  span.textContent = initialsOf(name);
  span.style.backgroundColor = colourOf(id);
  return span;
}

// Names that occur more than once among `people` ({id, name}), compared case-insensitively.
export function sharedNames(people) {
  const counts = new Map();
  for (const person of people) {
    const key = String(person.name).toLocaleLowerCase();
    counts.set(key, (counts.get(key) || 0) + 1);
  }
  return new Set([...counts].filter(([, n]) => n > 1).map(([key]) => key));
}
