"""Client-reported captions (`ws/captions/<slug>/`): in the browser-direct modes OpenAI
transcribes and only the browser sees the events, so it relays them here, and they become the
room's shared, stored captions like any engine's, marked `client`.

The frames are the Realtime API's own transcript events, unchanged, validated here: known
types only, bounded ids and text, integer audio times. Item ids are the reporter's own, so they
are namespaced by speaker before they meet anyone else's (unique per room in the database).
"""

from __future__ import annotations

from rooms import protocol
from rooms.protocol import ProtocolError

MAX_ITEM_ID_CHARS = 40
MAX_TRANSCRIPT_CHARS = 2000
REPORTED_TYPES = {
    "input_audio_buffer.speech_started": {"item_id", "audio_start_ms"},
    "input_audio_buffer.speech_stopped": {"item_id", "audio_end_ms"},
    "input_audio_buffer.committed": {"item_id"},
    "conversation.item.input_audio_transcription.delta": {"item_id", "delta"},
    "conversation.item.input_audio_transcription.completed": {"item_id", "transcript"},
    "conversation.item.input_audio_transcription.failed": {"item_id"},
}
TEXT_FIELDS = ("delta", "transcript")
TIME_FIELDS = ("audio_start_ms", "audio_end_ms")


def parse_report(data: dict, speaker_id: str) -> dict:
    """A validated engine event from a report frame, with ids namespaced by `speaker_id`."""
    kind = data.get("type")
    if kind not in REPORTED_TYPES:
        raise ProtocolError(protocol.UNKNOWN_TYPE,
                            f"Report one of: {', '.join(sorted(REPORTED_TYPES))}.")
    event = {"type": kind}
    for field in REPORTED_TYPES[kind]:
        if field not in data:
            raise ProtocolError(protocol.MISSING_FIELD, f"Missing field {field!r}.")
    for field in ("item_id", "previous_item_id"):
        value = data.get(field)
        if value is None and field == "previous_item_id":
            continue
        if not isinstance(value, str) or not 0 < len(value) <= MAX_ITEM_ID_CHARS:
            raise ProtocolError(protocol.INVALID_FIELD,
                                f"{field!r} must be a string of 1-{MAX_ITEM_ID_CHARS} chars.")
        event[field] = f"{speaker_id}:{value}"
    for field in TEXT_FIELDS:
        if field in REPORTED_TYPES[kind]:
            value = data[field]
            if not isinstance(value, str):
                raise ProtocolError(protocol.INVALID_FIELD, f"{field!r} must be a string.")
            if len(value) > MAX_TRANSCRIPT_CHARS:
                raise ProtocolError(protocol.TEXT_TOO_LONG,
                                    f"{field!r} is limited to {MAX_TRANSCRIPT_CHARS} chars.")
            event[field] = value
    for field in TIME_FIELDS:
        if field in REPORTED_TYPES[kind]:
            value = data[field]
            if not isinstance(value, int) or isinstance(value, bool) or not \
                    0 <= value < 24 * 3600 * 1000:
                raise ProtocolError(protocol.INVALID_FIELD,
                                    f"{field!r} must be milliseconds (an integer >= 0).")
            event[field] = value
    return event
