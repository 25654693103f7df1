"""The signaling socket's wire protocol (`ws/signal/<slug>/`), documented in docs/protocol.md
and mirrored by static/parley/signaling-protocol.js.

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
NOT_JOINED = "not_joined"  # offer/answer/candidate/leave before a successful join
ALREADY_JOINED = "already_joined"
NO_PEER = "no_peer"  # nobody to relay to: alone in the call
PEER_GONE = "peer_gone"  # addressed to a peer that has left
SDP_TOO_LARGE = "sdp_too_large"

# Close code for a connection replaced by the same person joining again (reload, second tab).
CLOSE_REPLACED = 4409

MAX_CANDIDATE_CHARS = 1024
MAX_MID_CHARS = 64
PEER_ID_PATTERN = re.compile(r"^[a-f0-9]{16}$")


@dataclass(frozen=True)
class Join:
    mode: Mode


@dataclass(frozen=True)
class Relay:
    """offer / answer / ice-candidate, relayed to the other peer as they are."""

    kind: str
    payload: dict
    peer: str | None  # the peer the sender means; None: whoever the other peer is


@dataclass(frozen=True)
class Leave:
    pass


SignalMessage = Join | Relay | Leave


def parse_signal_message(data: dict, *, max_sdp_chars: int) -> SignalMessage:
    kind = data.get("type")
    if kind is None:
        raise ProtocolError(MISSING_FIELD, "Missing field 'type'.")
    if kind == "join":
        mode = data.get("mode")
        if mode is None:
            raise ProtocolError(MISSING_FIELD, "Missing field 'mode'.")
        if mode not in MODES:
            raise ProtocolError(INVALID_FIELD, "mode must be 'chat' or 'video'.")
        return Join(mode=mode)
    if kind == "leave":
        return Leave()
    if kind in ("offer", "answer"):
        return Relay(kind, {"sdp": check_sdp(data, max_sdp_chars)}, _peer(data))
    if kind == "ice-candidate":
        return Relay(kind, {"candidate": check_candidate(data)}, _peer(data))
    raise ProtocolError(UNKNOWN_TYPE, f"Unknown message type {str(kind)[:40]!r}.")


def _peer(data: dict) -> str | None:
    peer = data.get("peer")
    if peer is None:
        return None
    if not isinstance(peer, str) or not PEER_ID_PATTERN.match(peer):
        raise ProtocolError(INVALID_FIELD, "peer must be a peer id from 'ready'.")
    return peer


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
