"""One group call inside an SFU worker: its members, their two peer connections each, and
who receives what.

Lifetimes: `SfuRoom.join` creates a member's publish connection (the browser offers on it)
and subscribe connection (only the server offers on it: aiortc cannot roll back, so a single
offerer avoids collisions); `SfuRoom.leave` closes both. A Publication lives as long as its
publisher; each ForwardedTrack as long as its subscription. Subscribe-side changes are
renegotiated one at a time per member.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.sdp import SessionDescription

from signaling.ice import peer_connection

from . import hooks
from .media import ForwardedTrack, Publication

log = logging.getLogger(__name__)

# Codecs the SFU forwards: it never transcodes, so publishers and subscribers must agree.
FORWARDED_CODECS = {"audio": ("audio/opus",), "video": ("video/VP8", "video/rtx")}

SendEvent = Callable[[str, dict], Awaitable[None]]


__all__ = ["SfuRoom", "peer_connection"]  # peer_connection: signaling/ice.py's, re-exported


# How long a renegotiation waits for the connection to come up before going ahead anyway.
SETTLE_TIMEOUT = 10


async def settled(pc: RTCPeerConnection) -> None:
    """Wait until `pc` is connected, failed or closed (at most SETTLE_TIMEOUT).

    aiortc starts the senders of a negotiation only once DTLS is connected, and only those it
    knew when that negotiation was applied: an answer applied while the first connection is
    still coming up leaves the new senders never started (seen in about half the runs of
    tests/test_sfu_socket.py before this wait).
    """
    done = asyncio.Event()

    def check() -> None:
        if pc.connectionState in ("connected", "failed", "closed"):
            done.set()

    pc.on("connectionstatechange", check)
    check()
    try:
        async with asyncio.timeout(SETTLE_TIMEOUT):
            await done.wait()
    except TimeoutError:
        log.warning("subscribe connection still %s; renegotiating anyway", pc.connectionState)
    finally:
        pc.remove_listener("connectionstatechange", check)


def prefer_forwarded_codecs(transceiver) -> None:
    kind = transceiver.kind
    wanted = FORWARDED_CODECS[kind]
    codecs = [c for c in RTCRtpSender.getCapabilities(kind).codecs if c.mimeType in wanted]
    transceiver.setCodecPreferences(codecs)


@dataclass(eq=False)
class Subscription:
    track: ForwardedTrack
    transceiver: object


@dataclass(eq=False)
class Member:
    id: str
    name: str
    publish_pc: RTCPeerConnection
    subscribe_pc: RTCPeerConnection
    publications: dict[str, Publication] = field(default_factory=dict)  # kind -> publication
    subscriptions: dict[tuple[str, str], Subscription] = field(default_factory=dict)
    speaker_key: str = ""  # the participant key captions are stored under
    muted: dict[str, bool] = field(default_factory=lambda: {"audio": False, "video": False})
    negotiating: bool = False
    renegotiate: bool = False



class SfuRoom:
    def __init__(self, key: str, send: SendEvent, ice_servers: list[dict] | None = None):
        """`ice_servers`: the worker's own RTCIceServer dicts (signaling.ice.server_ice_servers),
        used for every connection of the room."""
        self.key = key
        self.send = send
        self.ice_servers = ice_servers
        self.members: dict[str, Member] = {}
        self.closed = False
        self.captions = None  # CallCaptions while captions are on

    @property
    def room_id(self) -> int:
        return int(self.key)

    # --- membership ----------------------------------------------------------------------
    async def join(self, member_id: str, name: str, speaker_key: str = "") -> Member:
        if member_id in self.members:
            await self.leave(member_id)
        member = Member(member_id, name, peer_connection(self.ice_servers),
                        peer_connection(self.ice_servers), speaker_key=speaker_key)
        member.publish_pc.on("track", lambda track: self._on_published(member, track))
        member.publish_pc.on(
            "connectionstatechange", lambda: self._on_connection_state(member, "publish")
        )
        self.members[member_id] = member
        for other in self.members.values():
            if other is not member:
                for publication in other.publications.values():
                    self._subscribe(member, publication)
        # The subscribe connection always carries a data channel, so it can be negotiated
        # before anyone publishes. Created after the transceivers: with MAX_BUNDLE, aiortc
        # 1.16 never starts ICE when the data channel was created first (measured).
        member.subscribe_pc.createDataChannel("sfu")
        await self._negotiate(member)
        await self.broadcast_participants()
        return member

    async def leave(self, member_id: str) -> None:
        member = self.members.pop(member_id, None)
        if member is None:
            return
        if self.captions is not None:
            await self.captions.stop(member_id)
        for publication in member.publications.values():
            publication.close()
        changed = []
        for other in self.members.values():
            for kind in ("audio", "video"):
                subscription = other.subscriptions.pop((member.id, kind), None)
                if subscription is not None:
                    subscription.transceiver.direction = "inactive"
                    changed.append(other)
        for other in dict.fromkeys(changed):
            await self._negotiate(other)
        await member.publish_pc.close()
        await member.subscribe_pc.close()
        await self.broadcast_participants()

    async def close(self) -> None:
        """End the call: close every connection, with no renegotiation on the way."""
        self.closed = True
        if self.captions is not None:
            await self.captions.stop_all()
        members, self.members = list(self.members.values()), {}
        for member in members:
            for publication in member.publications.values():
                publication.close()
            await member.publish_pc.close()
            await member.subscribe_pc.close()

    # --- publish side (the browser offers) ------------------------------------------------
    async def publish(self, member_id: str, offer_sdp: str) -> str:
        member = self.members[member_id]
        pc = member.publish_pc
        if pc.remoteDescription is None:
            # aiortc settles a section's codecs while applying the offer, so the receiving
            # transceivers (restricted to what we forward) must exist before it, one per
            # audio/video section in the offer's order.
            for media in SessionDescription.parse(offer_sdp).media:
                if media.kind in FORWARDED_CODECS:
                    prefer_forwarded_codecs(pc.addTransceiver(media.kind, direction="recvonly"))
        await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return pc.localDescription.sdp

    def _on_published(self, member: Member, track) -> None:
        """Called on the publish connection's "track" event, before media flows."""
        transceiver = next(
            t for t in member.publish_pc.getTransceivers() if t.receiver.track is track
        )
        old = member.publications.pop(track.kind, None)
        if old is not None:
            old.close()
        publication = Publication(member.id, track.kind, transceiver.receiver, transceiver.mid)
        member.publications[track.kind] = publication
        if track.kind == "audio" and self.captions is not None:
            self.captions.start(member.id, member.speaker_key, member.name, publication)
        for other in self.members.values():
            if other is not member:
                self._subscribe(other, publication)
                hooks.run_soon(self._negotiate(other))
        hooks.run_soon(self.broadcast_participants())

    # --- subscribe side (the server offers) -----------------------------------------------
    def _subscribe(self, member: Member, publication: Publication) -> None:
        track = publication.subscribe()
        transceiver = member.subscribe_pc.addTransceiver(track, direction="sendonly")
        # One stream id per participant, so browsers keep each person's audio and video in
        # sync (aiortc gives every track of a connection the same one).
        transceiver.sender._stream_id = f"parley-{publication.owner}"
        prefer_forwarded_codecs(transceiver)
        hooks.on_keyframe_request(transceiver.sender, publication.request_keyframe)
        member.subscriptions[(publication.owner, publication.kind)] = Subscription(
            track, transceiver
        )

    async def _negotiate(self, member: Member) -> None:
        """Send the member a new subscribe offer, or mark that one is needed after the
        current one is answered."""
        if member.negotiating:
            member.renegotiate = True
            return
        pc = member.subscribe_pc
        if self.members.get(member.id) is not member or pc.signalingState == "closed":
            return
        member.negotiating = True
        if pc.remoteDescription is not None:
            await settled(pc)
        member.renegotiate = False
        await pc.setLocalDescription(await pc.createOffer())
        await self.send(member.id, self.participants_event(member))
        await self.send(member.id, {"type": "subscribe-offer", "sdp": pc.localDescription.sdp})

    async def subscribe_answer(self, member_id: str, answer_sdp: str) -> None:
        member = self.members[member_id]
        await member.subscribe_pc.setRemoteDescription(
            RTCSessionDescription(answer_sdp, "answer")
        )
        member.negotiating = False
        if member.renegotiate:
            await self._negotiate(member)

    # --- state ----------------------------------------------------------------------------
    async def set_muted(self, member_id: str, audio: bool, video: bool) -> None:
        self.members[member_id].muted = {"audio": audio, "video": video}
        await self.broadcast_participants()

    async def set_captions(self, on: bool) -> None:
        """Start or stop live captions for everyone's audio (decoded only while on)."""
        from .captions import CallCaptions

        if on and self.captions is None:
            self.captions = CallCaptions(self.room_id)
            for member in self.members.values():
                audio = member.publications.get("audio")
                if audio is not None:
                    self.captions.start(member.id, member.speaker_key, member.name, audio)
        elif not on and self.captions is not None:
            captions, self.captions = self.captions, None
            await captions.stop_all()
        await self.broadcast_participants()

    def participants_event(self, viewer: Member) -> dict:
        """Everyone in the call as `viewer` sees them: their tracks by viewer's mids."""
        participants = []
        for member in self.members.values():
            mids = {}
            for kind in ("audio", "video"):
                subscription = viewer.subscriptions.get((member.id, kind))
                if subscription is not None and subscription.transceiver.mid is not None:
                    mids[kind] = subscription.transceiver.mid
            participants.append({
                "id": member.id, "name": member.name, "muted": dict(member.muted),
                "mids": mids, "publishing": sorted(member.publications), "you":
                member is viewer,
            })
        return {"type": "participants", "participants": participants,
                "captions": self.captions is not None}

    async def broadcast_participants(self) -> None:
        for member in list(self.members.values()):
            await self.send(member.id, self.participants_event(member))

    def _on_connection_state(self, member: Member, which: str) -> None:
        state = member.publish_pc.connectionState
        if state == "failed" and self.members.get(member.id) is member:
            log.info("member %s publish connection failed; removing", member.id)
            hooks.run_soon(self.leave(member.id))

    def stats(self) -> dict:
        return {
            "members": len(self.members),
            "publications": sum(len(m.publications) for m in self.members.values()),
            "forwarded_tracks": sum(len(m.subscriptions) for m in self.members.values()),
        }

