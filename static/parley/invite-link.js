// "Copy invite link" on the room page: copies the room's address and says so beside the
// button; where the clipboard is unavailable (plain http, permission refused), selects the
// address for the person to copy themselves.
const CONFIRMATION_MS = 4000;

export function wireInviteLink(button, field, note) {
  let clearTimer = null;
  const say = (text) => {
    note.textContent = text;
    clearTimeout(clearTimer);
    clearTimer = setTimeout(() => { note.textContent = ""; }, CONFIRMATION_MS);
  };
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(field.value);
      say("Copied");
    } catch {
      field.focus();
      field.select();
      say("Selected: press Ctrl+C (⌘C) to copy");
    }
  });
}
