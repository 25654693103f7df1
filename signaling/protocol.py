"""The signaling socket's wire protocol (`ws/signal/<slug>/`), documented in docs/protocol.md
and docs/signaling.md, mirrored by static/parley/signaling-protocol.js.

Framing, close codes and the generic error codes are the room socket's (rooms/protocol.py);
this module adds the signaling messages and their shape checks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from rooms.protocol import (
    INVALID_FIELD,
    MISSING_FIELD,
    UNKNOWN_TYPE,
    ProtocolError,
)

MODES = ("chat", "video")
Mode = Literal["chat", "video"]

# Error codes specific to signaling (the connection stays open after each).
NOT_HERE = "not_here"  # invite to someone with no signaling connection in the room
SELF_CALL = "self_call"
BUSY = "busy"  # the callee is in as many direct calls as allowed
TOO_MANY_CALLS = "too_many_calls"  # the caller is
TOO_MANY_INVITES = "too_many_invites"  # the caller has as many invitations ringing as allowed
DUPLICATE_CALL = "duplicate_call"  # a call of that mode with that person already exists
UNKNOWN_CALL = "unknown_call"
NOT_YOUR_CALL = "not_your_call"
NOT_RINGING = "not_ringing"  # accept/decline/cancel of an accepted call
NOT_ACCEPTED = "not_accepted"  # offer/answer/candidate before the call was accepted
SDP_TOO_LARGE = "sdp_too_large"

# Why a call ended (`call-ended` reason).
DECLINED = "declined"
CANCELLED = "cancelled"
TIMEOUT = "timeout"
HUNG_UP = "hung-up"
GONE = "gone"
ANSWERED_ELSEWHERE = "answered-elsewhere"

MAX_CANDIDATE_CHARS = 1024
MAX_MID_CHARS = 64
CALL_ID_PATTERN = re.compile(r"^[a-f0-9]{16}$")
PARTICIPANT_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_CLIENT_ID_CHARS = 64
CALL_ACTIONS = ("accept", "decline", "cancel", "hang-up")


@dataclass(frozen=True)
class Invite:
    to: str
    mode: Mode
    client_id: str | None


@dataclass(frozen=True)
class CallAction:
    """accept / decline / cancel / hang-up of one call."""

    kind: str
    call: str


@dataclass(frozen=True)
class Relay:
    """offer / answer / ice-candidate, relayed to the other end of `call` as they are."""

    kind: str
    call: str
    payload: dict


SignalMessage = Invite | CallAction | Relay


def parse_signal_message(data: dict, *, max_sdp_chars: int) -> SignalMessage:
    kind = data.get("type")
    if kind is None:
        raise ProtocolError(MISSING_FIELD, "Missing field 'type'.")
    if kind == "invite":
        client_id = data.get("client_id")
        if client_id is not None and (
            not isinstance(client_id, str) or len(client_id) > MAX_CLIENT_ID_CHARS
        ):
            raise ProtocolError(INVALID_FIELD, "client_id must be a short string.")
        to = data.get("to")
        if to is None:
            raise ProtocolError(MISSING_FIELD, "Missing field 'to'.", ref=client_id)
        if not isinstance(to, str) or not PARTICIPANT_ID_PATTERN.match(to):
            raise ProtocolError(INVALID_FIELD, "to must be a participant id.", ref=client_id)
        mode = data.get("mode")
        if mode is None:
            raise ProtocolError(MISSING_FIELD, "Missing field 'mode'.", ref=client_id)
        if mode not in MODES:
            raise ProtocolError(INVALID_FIELD, "mode must be 'chat' or 'video'.", ref=client_id)
        return Invite(to=to, mode=mode, client_id=client_id)
    if kind in CALL_ACTIONS:
        return CallAction(kind, call_id(data))
    if kind in ("offer", "answer"):
        return Relay(kind, call_id(data), {"sdp": check_sdp(data, max_sdp_chars)})
    if kind == "ice-candidate":
        return Relay(kind, call_id(data), {"candidate": check_candidate(data)})
    raise ProtocolError(UNKNOWN_TYPE, f"Unknown message type {str(kind)[:40]!r}.")


def call_id(data: dict) -> str:
    call = data.get("call")
    if call is None:
        raise ProtocolError(MISSING_FIELD, "Missing field 'call'.")
    if not isinstance(call, str) or not CALL_ID_PATTERN.match(call):
        raise ProtocolError(INVALID_FIELD, "call must be a call id (from 'ringing' or 'invite').")
    return call


def check_sdp(data: dict, max_chars: int) -> str:
    if "sdp" not in data:
        raise ProtocolError(MISSING_FIELD, "Missing field 'sdp'.")
    sdp = data["sdp"]
    if not isinstance(sdp, str):
        raise ProtocolError(INVALID_FIELD, "sdp must be the SDP text (a string).")
    if len(sdp) > max_chars:
        raise ProtocolError(SDP_TOO_LARGE, f"sdp is limited to {max_chars} characters.")
    if not sdp.startswith("v=0") or "\nm=" not in sdp or "\x00" in sdp:
        raise ProtocolError(INVALID_FIELD, "sdp is not a session description (v=0 ... m=).")
    return sdp


def check_candidate(data: dict) -> dict:
    if "candidate" not in data:
        raise ProtocolError(MISSING_FIELD, "Missing field 'candidate'.")
    init = data["candidate"]
    if not isinstance(init, dict):
        raise ProtocolError(INVALID_FIELD, "candidate must be an RTCIceCandidateInit object.")
    line = init.get("candidate")
    if not isinstance(line, str) or len(line) > MAX_CANDIDATE_CHARS:
        raise ProtocolError(INVALID_FIELD, "candidate.candidate must be a short string.")
    if line and not line.startswith(("candidate:", "a=candidate:")):
        raise ProtocolError(INVALID_FIELD, "candidate.candidate must start with 'candidate:'.")
    mid = init.get("sdpMid")
    if mid is not None and (not isinstance(mid, str) or len(mid) > MAX_MID_CHARS):
        raise ProtocolError(INVALID_FIELD, "candidate.sdpMid must be a short string or null.")
    index = init.get("sdpMLineIndex")
    if index is not None and (
        not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 256
    ):
        raise ProtocolError(INVALID_FIELD, "candidate.sdpMLineIndex must be 0-255 or null.")
    if line and mid is None and index is None:
        raise ProtocolError(INVALID_FIELD, "candidate needs sdpMid or sdpMLineIndex.")
    fragment = init.get("usernameFragment")
    if fragment is not None and (not isinstance(fragment, str) or len(fragment) > 256):
        raise ProtocolError(INVALID_FIELD, "candidate.usernameFragment must be a short string.")
    # Pass on only the known fields, so nothing else rides along to the other browser.
    return {"candidate": line, "sdpMid": mid, "sdpMLineIndex": index,
            "usernameFragment": fragment}


class CallRefused(ProtocolError):
    """A refused call message: the `error` event names the call it was about."""

    def __init__(self, code: str, message: str, *, call: str | None = None, ref=None):
        super().__init__(code, message, ref=ref)
        self.call = call

    def event(self) -> dict:
        event = super().event()
        if self.call is not None:
            event["call"] = self.call
        return event
