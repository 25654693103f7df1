"""Client-reported captions (`ws/captions/<slug>/`): in the browser-direct modes OpenAI
transcribes and only the browser sees the events, so it relays them here, and they become the
room's shared, stored captions like any engine's, marked `client`.

The frames are the Realtime API's own transcript events, unchanged, validated here: known
types only, bounded ids and text, integer audio times. Item ids are the reporter's own, so they
are namespaced by speaker before they meet anyone else's (unique per room in the database).

Audio times place the stored segments: SpeakerCaptions stores a turn at the time its stream
opened plus its `audio_start_ms`. A reporter could claim any time up to a day ahead and so
date its captions in the future, where they would stay the room's newest and push honest ones
out of transcript.json. So times are bounded by the stream: at most the wall-clock time since
the reporter's socket opened plus AUDIO_AHEAD_SLACK_MS (with the lower bound 0, a report can
only be dated within the reporter's own connection). A later time is taken as that bound, not
refused: after a reconnect an honest browser's OpenAI session runs on from before the new
socket, and its captions then land at about when they arrive instead of being lost.
"""

from __future__ import annotations

from datetime import UTC, datetime

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
# Longest audio time accepted at all: an OpenAI session lasts at most an hour; a day is the
# same bound as before, for integers that fit every database column and timedelta.
MAX_AUDIO_MS = 24 * 3600 * 1000
# How far a reported time may run ahead of the wall clock since the report socket opened: the
# browser opens its OpenAI session a moment before (or after) this socket, which is then the
# stream's origin (a key mint and two handshakes, well under this on a slow network).
AUDIO_AHEAD_SLACK_MS = 5000


def max_audio_ms(opened_at: datetime, now: datetime | None = None) -> int:
    """The latest audio time a reporter whose captions opened at `opened_at` (the
    SpeakerCaptions origin) may claim at `now`: the elapsed time plus AUDIO_AHEAD_SLACK_MS."""
    elapsed = (now or datetime.now(UTC)) - opened_at
    return max(0, int(elapsed.total_seconds() * 1000)) + AUDIO_AHEAD_SLACK_MS


def parse_report(data: dict, speaker_id: str, *, latest_audio_ms: int | None = None) -> dict:
    """A validated engine event from a report frame, with ids namespaced by `speaker_id`.

    Audio times beyond `latest_audio_ms` (see max_audio_ms; None: only MAX_AUDIO_MS) are
    taken as `latest_audio_ms`. Pure: the caller knows when its stream opened."""
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
                    0 <= value < MAX_AUDIO_MS:
                raise ProtocolError(protocol.INVALID_FIELD,
                                    f"{field!r} must be milliseconds (an integer >= 0).")
            if latest_audio_ms is not None:
                value = min(value, latest_audio_ms)
            event[field] = value
    return event
