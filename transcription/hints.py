"""Room context as hints for the offline engine: Whisper's initial prompt built from the
room's name, the names of the people in it and its recent chat, so that names and jargon said
in the meeting come out as they are written there.

Measured on 2026-12-01 (tiny.en, espeak-ng, sentences full of names and jargon, a room prompt
of its name, four people and four chat lines that did not contain the sentences): word error
rate 57% -> 43% (en-us) and 95% -> 5% (en-gb); on ordinary sentences 3% -> 0% and 6% -> 6%.
But bench/transcription.py found a prompt of only a room's name ("captions bench.") raising
its ordinary sentences' errors from 3 to 7 of 77 words. So hints are given only where the
room has chat, the source of the names and jargon they are for: a room without chat gets none.
"""

from __future__ import annotations

from channels.db import database_sync_to_async

from rooms.identity import plain_line
from rooms.models import Message, Room

from .models import CaptionSegment

# Whisper keeps the last 223 tokens of a prompt; ~600 characters of English stay within that.
MAX_HINT_CHARS = 600
RECENT_MESSAGES = 20
# A stream asks again this often, so words that come up in the chat later are known too.
REFRESH_SECONDS = 30.0


def room_hints(room_id: int) -> str:
    """`<room name>. <names>. <recent chat lines, oldest first>`, cut from the front to
    MAX_HINT_CHARS (Whisper weighs the end of its prompt; the newest chat is kept); "" for a
    room without chat."""
    room = Room.objects.filter(pk=room_id).only("name").first()
    if room is None:
        return ""
    messages = list(Message.objects.filter(room_id=room_id).order_by("-seq")
                    .values_list("author_name", "text")[:RECENT_MESSAGES])[::-1]
    if not messages:
        return ""  # a name alone measured worse than nothing (above)
    speakers = CaptionSegment.objects.filter(room_id=room_id).order_by("-id") \
        .values_list("speaker_name", flat=True)[:RECENT_MESSAGES]
    names: list[str] = []
    for name in [*(author for author, _ in messages), *speakers]:
        name = plain_line(name)
        if name and name not in names:
            names.append(name)
    parts = [plain_line(room.name)]
    if names:
        parts.append(", ".join(names))
    parts += [plain_line(text) for _, text in messages]
    hints = ". ".join(part.rstrip(".") for part in parts if part) + "."
    return hints[-MAX_HINT_CHARS:].lstrip()


# Not thread-sensitive: streams start inside requests (POST /v1/realtime/calls) whose
# thread-sensitive executor is gone, or blocked, by the time a refresh runs (it hung there).
fetch_room_hints = database_sync_to_async(room_hints, thread_sensitive=False)
