"""A room's transcript as plain text, WebVTT and SubRip.

Cue times are relative to the first segment's start, so a recording started with the first
words lines up with them.

Names and texts are written defensively whatever the database holds (rows stored before names
were cleaned may have anything): each on one line without control or bidi characters, so no
one can add a line, a cue or a fake speaker to a transcript.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from rooms.identity import plain_line, public_id_for

if TYPE_CHECKING:
    from .models import CaptionSegment

# What a transcript says for a speaker whose stored name shows nothing.
UNNAMED_SPEAKER = "?"
# "-->" separates a cue's times in both formats; players look for it anywhere in a line.
_ARROW = re.compile(r"-{2,}>")


class Segment(Protocol):
    speaker_name: str
    text: str
    started_at: datetime
    ended_at: datetime


def _clock(offset: timedelta, separator: str) -> str:
    millis = max(0, round(offset.total_seconds() * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{separator}{millis:03d}"


def _cues(segments: Sequence[Segment]):
    if not segments:
        return
    origin = segments[0].started_at
    for segment in segments:
        start = segment.started_at - origin
        end = max(segment.ended_at - origin, start + timedelta(milliseconds=1))
        yield start, end, segment


def _one_line(text: str) -> str:
    """A blank line ends a cue and a line break starts a transcript line: one line each."""
    return plain_line(text)


def _name(segment: Segment) -> str:
    return _one_line(segment.speaker_name) or UNNAMED_SPEAKER


def _no_arrow(text: str) -> str:
    """SubRip has no escapes: "-->" (which would read as a timing line) becomes "->"."""
    return _ARROW.sub("->", text)


def to_txt(segments: Sequence[Segment]) -> str:
    return "".join(
        f"[{segment.started_at:%H:%M:%S}] {_name(segment)}: {_one_line(segment.text)}\n"
        for segment in segments
    )


def to_vtt(segments: Sequence[Segment]) -> str:
    lines = ["WEBVTT", ""]
    for start, end, segment in _cues(segments):
        lines += [
            f"{_clock(start, '.')} --> {_clock(end, '.')}",
            f"<v {_escape_vtt(_name(segment))}>{_escape_vtt(_one_line(segment.text))}",
            "",
        ]
    return "\n".join(lines)


def to_srt(segments: Sequence[Segment]) -> str:
    lines = []
    for index, (start, end, segment) in enumerate(_cues(segments), start=1):
        lines += [
            str(index),
            f"{_clock(start, ',')} --> {_clock(end, ',')}",
            _no_arrow(f"{_name(segment)}: {_one_line(segment.text)}"),
            "",
        ]
    return "\n".join(lines)


def _escape_vtt(text: str) -> str:
    """WebVTT's escapes: no tag can open or close (the voice tag's name ends at the first
    ">"), and "-->" becomes "--&gt;", which no parser takes for a cue's times."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


FORMATS = {
    "txt": (to_txt, "text/plain; charset=utf-8"),
    "vtt": (to_vtt, "text/vtt; charset=utf-8"),
    "srt": (to_srt, "application/x-subrip; charset=utf-8"),
}


def caption_json(segment: CaptionSegment) -> dict:
    """A stored segment as JSON: transcript.json's segments and the caption feed's finals."""
    return {
        "item_id": segment.item_id, "previous_item_id": segment.previous_item_id or None,
        # Rows stored before names were cleaned may hold line breaks or bidi controls.
        "speaker": {"id": public_id_for(segment.speaker_key),
                    "name": plain_line(segment.speaker_name)},
        "text": segment.text, "engine": segment.engine,
        "started_at": _utc(segment.started_at), "ended_at": _utc(segment.ended_at),
    }


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
