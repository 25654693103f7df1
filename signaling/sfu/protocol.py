"""The group call socket's wire protocol (`ws/sfu/<slug>/`), documented in docs/protocol.md
and mirrored by static/parley/sfu-protocol.js. Framing, close codes and generic error codes
are the room socket's; SDP and candidate checks are the P2P relay's."""

from __future__ import annotations

from dataclasses import dataclass

from rooms.protocol import INVALID_FIELD, MISSING_FIELD, UNKNOWN_TYPE, ProtocolError
from signaling.protocol import MAX_MID_CHARS, check_candidate, check_sdp
from signaling.protocol import SDP_TOO_LARGE as SDP_TOO_LARGE  # the worker refuses with it too

NOT_JOINED = "not_joined"
ALREADY_JOINED = "already_joined"
WORKER_UNAVAILABLE = "worker_unavailable"
# Sent by the worker, each with `command` (the client message it answers; docs/protocol.md).
SFU_FAILED = "sfu_failed"  # the worker failed a command unexpectedly
CALL_FULL = "call_full"  # join: the call has SFU_MAX_MEMBERS members
CALL_BUSY = "call_busy"  # the call's command queue is full: send the command again later
TOO_MANY_TRACKS = "too_many_tracks"  # publish: more media sections than a member may publish
PUBLISH_FAILED = "publish_failed"  # publish: not applied; publish again on a fresh connection
ANSWER_FAILED = "answer_failed"  # subscribe-answer: not applied; subscribe-lost follows
SUBSCRIBE_LOST = "subscribe_lost"  # subscribe-answer with no subscribe connection: resubscribe
NO_SCREEN_SECTION = "no_screen_section"  # share on: no screen section published yet
TARGETS = ("publish", "subscribe")


@dataclass(frozen=True)
class Join:
    pass


@dataclass(frozen=True)
class Publish:
    sdp: str
    screen: str | None = None  # the mid of the offer's shared-screen video section


@dataclass(frozen=True)
class Share:
    on: bool


@dataclass(frozen=True)
class SubscribeAnswer:
    sdp: str


@dataclass(frozen=True)
class Candidate:
    target: str
    candidate: dict


@dataclass(frozen=True)
class Mute:
    audio: bool
    video: bool


@dataclass(frozen=True)
class Leave:
    pass


@dataclass(frozen=True)
class Captions:
    on: bool


@dataclass(frozen=True)
class Resubscribe:
    pass


SfuMessage = (Join | Publish | SubscribeAnswer | Candidate | Mute | Leave | Captions
              | Resubscribe | Share)


def parse_sfu_message(data: dict, *, max_sdp_chars: int) -> SfuMessage:
    kind = data.get("type")
    if kind is None:
        raise ProtocolError(MISSING_FIELD, "Missing field 'type'.")
    if kind == "join":
        return Join()
    if kind == "leave":
        return Leave()
    if kind == "resubscribe":
        return Resubscribe()
    if kind == "publish":
        screen = data.get("screen")
        if screen is not None and (not isinstance(screen, str) or not screen
                                   or len(screen) > MAX_MID_CHARS):
            raise ProtocolError(INVALID_FIELD, "screen must be the mid of a video section.")
        return Publish(check_sdp(data, max_sdp_chars), screen)
    if kind == "share":
        on = data.get("on")
        if not isinstance(on, bool):
            raise ProtocolError(INVALID_FIELD, "share needs a boolean 'on'.")
        return Share(on)
    if kind == "subscribe-answer":
        return SubscribeAnswer(check_sdp(data, max_sdp_chars))
    if kind == "candidate":
        target = data.get("target")
        if target not in TARGETS:
            raise ProtocolError(INVALID_FIELD, "target must be 'publish' or 'subscribe'.")
        return Candidate(target, check_candidate(data))
    if kind == "mute":
        audio, video = data.get("audio"), data.get("video")
        if not isinstance(audio, bool) or not isinstance(video, bool):
            raise ProtocolError(INVALID_FIELD, "mute needs booleans 'audio' and 'video'.")
        return Mute(audio, video)
    if kind == "captions":
        on = data.get("on")
        if not isinstance(on, bool):
            raise ProtocolError(INVALID_FIELD, "captions needs a boolean 'on'.")
        return Captions(on)
    raise ProtocolError(UNKNOWN_TYPE, f"Unknown message type {str(kind)[:40]!r}.")
