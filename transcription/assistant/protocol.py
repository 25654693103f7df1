"""The room events of the assistant (docs/assistant.md), mirrored by
static/parley/assistant-panel.js. They travel on the room socket like captions do."""

from __future__ import annotations

from rooms.identity import Participant

# The assistant's identity in the room: its chat messages' author and its presence entry.
ASSISTANT_KEY = "a:assistant"
ASSISTANT_NAME = "Assistant"
ASSISTANT = Participant(key=ASSISTANT_KEY, name=ASSISTANT_NAME)
PRESENCE_KIND = "assistant"

# Room event types.
STATE = "assistant.state"
DELTA = "assistant.delta"
DONE = "assistant.done"
TOOL = "assistant.tool"
ERROR = "assistant.error"
VOICE = "assistant.voice"  # {on}: join or leave the group call (asked in any process)

# assistant.state states.
JOINING = "joining"
LISTENING = "listening"
THINKING = "thinking"
SPEAKING = "speaking"
LEAVING = "leaving"  # asked to leave (any process); the owner ends the session
LEFT = "left"

# Why it left (assistant.state `reason` when LEFT).
REMOVED = "removed"
ROOM_EMPTY = "room_empty"
FAILED = "failed"
ACCESS_LOST = "access_lost"
STOPPED = "stopped"  # the server is stopping

# assistant.error codes (besides engines.py's upstream_* codes).
UNAVAILABLE = "assistant_unavailable"
BUDGET_EXHAUSTED = "assistant_budget_exhausted"
RATE_LIMITED = "assistant_rate_limited"
BUSY = "assistant_busy"
ANSWER_FAILED = "assistant_answer_failed"
VOICE_FAILED = "assistant_voice_failed"  # it could not join the group call

# A chat message addressed to the assistant starts with this (any case).
MENTION = "@assistant"


def addressed(text: str) -> str | None:
    """The question in a chat message addressed to the assistant, else None."""
    stripped = text.lstrip()
    if not stripped[:len(MENTION)].lower() == MENTION:
        return None
    rest = stripped[len(MENTION):]
    if rest and rest[0].isalnum():  # "@assistants", "@assistant2": someone else
        return None
    return rest.lstrip(" ,:").strip() or None


def state_event(state: str, *, invited_by: dict | None = None, voice: bool = False,
                reason: str | None = None) -> dict:
    event = {"type": STATE, "state": state, "voice": voice}
    if invited_by is not None:
        event["invited_by"] = invited_by
    if reason is not None:
        event["reason"] = reason
    return event


def error_event(code: str, message: str) -> dict:
    return {"type": ERROR, "code": code, "message": message}
