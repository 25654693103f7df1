"""One group call inside an SFU worker: its members, their two peer connections each, and
who receives what.

Lifetimes (one owner each):
- the room creates a member's publish connection (the browser offers on it) and subscribe
  connection (only the server offers on it: aiortc cannot roll back, so a single offerer
  avoids collisions) on `join`, and closes both on `leave` or `close`;
- a publish connection whose offer failed, or that failed or closed on its own, is closed by
  the room and replaced by a fresh one (`publish-lost` / an error tells the member to publish
  again); a subscribe connection that failed or closed is closed and the member told
  (`subscribe-lost`) until it asks for a fresh one (`resubscribe`);
- a Publication lives as long as its publish connection; each ForwardedTrack as long as its
  subscription;
- every background task the room starts (renegotiations, participant broadcasts, resets) is
  the room's: `close` cancels them. Subscribe-side changes are renegotiated one at a time per
  member.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field

from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.sdp import SessionDescription

from rooms.identity import public_id_for
from rooms.protocol import ProtocolError
from signaling.ice import peer_connection as peer_connection  # re-exported for old imports

from . import hooks, protocol
from .captions import CallCaptions
from .media import ForwardedTrack, Publication

log = logging.getLogger(__name__)

# Codecs the SFU forwards: it never transcodes, so publishers and subscribers must agree.
FORWARDED_CODECS = {"audio": ("audio/opus",), "video": ("video/VP8", "video/rtx")}
# Media sections one member may publish (and so tracks per member): a microphone, a camera
# and a shared screen (a second video section, named by `publish.screen`). Each member has
# one publication per source and `participants.mids` one mid per source. Checked before
# anything is allocated for an offer.
MAX_SECTIONS = {"audio": 1, "video": 2}
# What a publication carries, and the media kind of each.
SOURCES = {"audio": "audio", "video": "video", "screen": "video"}
# The socket already refuses larger SDP (SIGNAL_MAX_SDP_CHARS); the worker checks again, as
# it cannot know every sender.
MAX_OFFER_CHARS = 64 * 1024
DEFAULT_MAX_MEMBERS = 16

SendEvent = Callable[[str, dict], Awaitable[None]]

# How long a renegotiation waits for the connection to come up before going ahead anyway.
SETTLE_TIMEOUT = 10


async def settled(pc: RTCPeerConnection) -> bool:
    """Wait until `pc` is connected, failed or closed (at most SETTLE_TIMEOUT); False when it
    was still coming up after that.

    aiortc starts the senders of a negotiation only once DTLS is connected, and only those it
    knew when that negotiation was applied: an answer applied while the first connection is
    still coming up leaves the new senders never started (seen in about half the runs of
    tests/test_sfu_socket.py before this wait). A negotiation that goes ahead unsettled is
    therefore repeated once the connection is up (SfuRoom._on_subscribe_state).
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
        return True
    except TimeoutError:
        log.warning("subscribe connection still %s; renegotiating anyway, and again once "
                    "it is up", pc.connectionState)
        return False
    finally:
        pc.remove_listener("connectionstatechange", check)


async def close_connection(pc: RTCPeerConnection) -> None:
    """Close `pc`, even when the task doing it is cancelled meanwhile (room.close, worker
    stop). aiortc closes a connection itself when the remote end closed DTLS; a second close
    awaits aiortc's own future, and cancelling that await cancels the future, which then
    fails aiortc's close (InvalidStateError) and leaves the connection half closed."""
    await asyncio.shield(pc.close())


def prefer_forwarded_codecs(transceiver) -> None:
    kind = transceiver.kind
    wanted = FORWARDED_CODECS[kind]
    codecs = [c for c in RTCRtpSender.getCapabilities(kind).codecs if c.mimeType in wanted]
    transceiver.setCodecPreferences(codecs)


# Sections of people who left stay in a subscribe connection as `inactive` (aiortc cannot
# remove or reuse them): ~1.2 KB of SDP each, so a long call with much churn outgrew the
# 64 KiB SDP limit after ~29 departures. Past this many, the connection is replaced instead
# of renegotiated (`subscribe-lost`, then the client's `resubscribe`): with SFU_MAX_MEMBERS
# 16, an offer stays under ~60 KB (30 live sections, 12 inactive, the data channel).
MAX_INACTIVE_SECTIONS = 12
LOST_MESSAGE = "Your subscribe connection failed; send 'resubscribe' for a new one."
COMPACT_MESSAGE = ("Your subscribe connection is being replaced by a smaller one (people "
                   "who left still took room in it); send 'resubscribe'.")


def limits_text() -> str:
    return "1 audio, 1 camera video and 1 screen video"


def check_publish_offer(offer_sdp: str, screen: str | None = None) -> SessionDescription:
    """Refuse an offer the room will not take, before anything is allocated for it: too
    large, more media sections than MAX_SECTIONS, more than one camera (a second video
    section is only allowed as the screen named by `screen`), or not parseable."""
    if len(offer_sdp) > MAX_OFFER_CHARS:
        raise ProtocolError(protocol.SDP_TOO_LARGE,
                            f"sdp is limited to {MAX_OFFER_CHARS} characters.")
    # Counted on the raw text first: parsing 1,900 sections is work the limit should spare.
    sections = Counter(line[2:].split(" ", 1)[0] for line in offer_sdp.splitlines()
                       if line.startswith("m="))
    over = {kind: n for kind, n in sections.items() if n > MAX_SECTIONS.get(kind, 0)}
    if over:
        found = ", ".join(f"{n} {kind}" for kind, n in sorted(over.items()))
        raise ProtocolError(protocol.TOO_MANY_TRACKS,
                            f"A publish offer may carry at most {limits_text()} section(s); "
                            f"this one has {found}.")
    try:
        offer = SessionDescription.parse(offer_sdp)
    except Exception as error:  # aiortc's parser raises ValueError, IndexError, KeyError...
        raise ProtocolError(protocol.PUBLISH_FAILED,
                            f"The publish offer could not be read: {error!r}.") from error
    video_mids = [m.rtp.muxId for m in offer.media if m.kind == "video"]
    if screen is not None and screen not in video_mids:
        raise ProtocolError(protocol.INVALID_FIELD,
                            "screen must be the mid of a video section of this offer.")
    if len([mid for mid in video_mids if mid != screen]) > 1:
        raise ProtocolError(protocol.TOO_MANY_TRACKS,
                            "A publish offer may carry one camera video section; a second "
                            "video section must be named as the shared screen ('screen').")
    return offer


@dataclass(eq=False)
class Subscription:
    track: ForwardedTrack
    transceiver: object


@dataclass(eq=False)
class Member:
    id: str
    name: str
    publish_pc: RTCPeerConnection | None = None
    subscribe_pc: RTCPeerConnection | None = None
    publications: dict[str, Publication] = field(default_factory=dict)  # source -> publication
    subscriptions: dict[tuple[str, str], Subscription] = field(default_factory=dict)
    screen_mid: str | None = None  # the publish section carrying the shared screen
    parked_screen: Publication | None = None  # the screen section while not shared
    speaker_key: str = ""  # the participant key captions are stored under
    muted: dict[str, bool] = field(default_factory=lambda: {"audio": False, "video": False})
    negotiating: bool = False  # a subscribe offer is out, not yet answered
    renegotiate: bool = False  # another one is needed once it is
    unsettled: bool = False  # one went out before the connection was up: repeat it then


class SfuRoom:
    def __init__(self, key: str, send: SendEvent,
                 ice_servers: list[dict] | Callable[[str], list[dict]] | None = None,
                 max_members: int = DEFAULT_MAX_MEMBERS):
        """`ice_servers`: the worker's own RTCIceServer dicts (signaling.ice.server_ice_servers)
        for every connection of the room, or a function of the member id giving them for that
        member's connections (SfuWorker.ice_servers: TURN credentials per member)."""
        self.key = key
        self.send = send
        self.ice_servers = ice_servers
        self.max_members = max_members
        self.members: dict[str, Member] = {}
        self.closed = False
        self.captions: CallCaptions | None = None  # while captions are on
        self.tasks: set[asyncio.Task] = set()

    @property
    def room_id(self) -> int:
        return int(self.key)

    # --- tasks ----------------------------------------------------------------------------
    def spawn(self, coroutine: Coroutine, *, name: str) -> None:
        """Run `coroutine` as a task of this room: `close` cancels whatever is still running."""
        if self.closed:
            coroutine.close()
            return
        task = asyncio.get_running_loop().create_task(coroutine, name=f"sfu-room.{name}")
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("SFU room task %s failed", task.get_name(), exc_info=task.exception())

    # --- membership ----------------------------------------------------------------------
    async def join(self, member_id: str, name: str, speaker_key: str = "") -> Member:
        if member_id in self.members:
            await self.leave(member_id)
        if len(self.members) >= self.max_members:
            raise ProtocolError(protocol.CALL_FULL,
                                f"This call is full ({self.max_members} members).")
        member = Member(member_id, name, speaker_key=speaker_key)
        member.publish_pc = self._publish_connection(member)
        self.members[member_id] = member
        await self._start_subscribe(member)
        await self.broadcast_participants()
        return member

    async def leave(self, member_id: str) -> None:
        member = self.members.pop(member_id, None)
        if member is None:
            return
        if self.captions is not None:
            await self.captions.stop(member_id)
        self._withdraw(member, list(member.publications.values()))
        self._drop_subscriptions(member)
        await self._close_connections(member)
        await self.broadcast_participants()

    async def close(self) -> None:
        """End the call: close every connection and task, with no renegotiation on the way."""
        self.closed = True
        current = asyncio.current_task()
        tasks = [task for task in self.tasks if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.captions is not None:
            await self.captions.stop_all()
        members, self.members = list(self.members.values()), {}
        for member in members:
            for publication in member.publications.values():
                publication.close()
        # All at once: a connection's close can wait on the network (deleting a TURN
        # allocation waits out aioice's retries when the TURN server is gone).
        await asyncio.gather(*(self._close_connections(member) for member in members))

    @staticmethod
    async def _close_connections(member: Member) -> None:
        await asyncio.gather(*(close_connection(pc) for pc in (member.publish_pc,
                                                               member.subscribe_pc)
                               if pc is not None))

    # --- publish side (the browser offers) ------------------------------------------------
    def _servers_for(self, member: Member) -> list[dict] | None:
        if callable(self.ice_servers):
            return self.ice_servers(member.id)
        return self.ice_servers

    def _publish_connection(self, member: Member) -> RTCPeerConnection:
        pc = peer_connection(self._servers_for(member))
        pc.on("track", lambda track: self._on_published(member, pc, track))
        pc.on("connectionstatechange", lambda: self._on_publish_state(member, pc))
        return pc

    async def publish(self, member_id: str, offer_sdp: str, screen: str | None = None) -> str:
        """Apply a publish offer, answer it. A refused offer allocates nothing; an offer that
        fails to apply costs the member its publish connection (aiortc's state after a failed
        setRemoteDescription is not reusable): it is replaced by a fresh one, on which the
        member publishes again."""
        member = self.members[member_id]
        offer = check_publish_offer(offer_sdp, screen)
        member.screen_mid = screen
        pc = member.publish_pc
        mids = {t.mid for t in pc.getTransceivers()}
        new = [m for m in offer.media if m.kind in FORWARDED_CODECS and m.rtp.muxId not in mids]
        tracks = Counter(t.kind for t in pc.getTransceivers()) + Counter(m.kind for m in new)
        if any(n > MAX_SECTIONS[kind] for kind, n in tracks.items()):
            # A renegotiation bringing new sections: the connection would hold more tracks.
            raise ProtocolError(protocol.TOO_MANY_TRACKS,
                                f"A member may publish at most {limits_text()} track(s); "
                                "publish again on a fresh connection.")
        try:
            # aiortc settles a section's codecs while applying the offer, so the receiving
            # transceivers (restricted to what we forward) must exist before it, one per new
            # audio/video section in the offer's order.
            for media in new:
                prefer_forwarded_codecs(pc.addTransceiver(media.kind, direction="recvonly"))
            await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as error:
            log.info("publish offer of %s failed: %r", member_id, error)
            await self._reset_publish(member, pc)
            raise ProtocolError(
                protocol.PUBLISH_FAILED,
                f"The publish offer could not be applied ({error!r}); publish again on a "
                "fresh connection.") from error
        return pc.localDescription.sdp

    async def _reset_publish(self, member: Member, pc: RTCPeerConnection) -> None:
        """Replace `pc` (failed, closed, or fed an offer it could not apply) with a fresh
        publish connection, withdrawing whatever it published."""
        if member.publish_pc is not pc:
            return
        member.publish_pc = self._publish_connection(member)
        publications = list(member.publications.values())
        member.publications.clear()
        member.parked_screen = None
        if self.captions is not None:
            await self.captions.stop(member.id)
        self._withdraw(member, publications)
        await close_connection(pc)
        self.spawn(self.broadcast_participants(), name="participants")

    def _on_published(self, member: Member, pc: RTCPeerConnection, track) -> None:
        """Called on the publish connection's "track" event, before media flows."""
        if pc is not member.publish_pc or self.members.get(member.id) is not member:
            return
        transceiver = next(t for t in pc.getTransceivers() if t.receiver.track is track)
        screen = track.kind == "video" and transceiver.mid == member.screen_mid
        source = "screen" if screen else track.kind
        old = member.publications.pop(source, None)
        if old is not None:
            self._withdraw(member, [old])
        publication = Publication(member.id, track.kind, transceiver.receiver, transceiver.mid,
                                  source=source)
        if source == "audio" and self.captions is not None:
            self.captions.start(member.id, member.speaker_key, member.name, publication)
        self._offer(member, publication)

    def _offer(self, member: Member, publication: Publication) -> None:
        """Make `publication` one of the member's and forward it to everyone else."""
        member.publications[publication.source] = publication
        for other in list(self.members.values()):
            if other is not member and self._subscribe(other, publication):
                self.spawn(self._renegotiate(other), name=f"negotiate.{other.id}")
        self.spawn(self.broadcast_participants(), name="participants")

    async def share_screen(self, member_id: str, on: bool) -> None:
        """Start or stop forwarding the member's screen section. The browser keeps the
        section between shares (replaceTrack, no renegotiation on its side); stopped, it
        forwards nothing and the others' sections for it go inactive."""
        member = self.members[member_id]
        if on:
            if "screen" in member.publications:
                return
            if member.parked_screen is None:
                raise ProtocolError(protocol.NO_SCREEN_SECTION,
                                    "Publish an offer with a screen section ('screen') "
                                    "before sharing.")
            publication, member.parked_screen = member.parked_screen, None
            self._offer(member, publication)
            return
        publication = member.publications.pop("screen", None)
        if publication is not None:
            self._withdraw(member, [publication])  # closing a publication leaves it reusable
            member.parked_screen = publication
            await self.broadcast_participants()

    def _withdraw(self, owner: Member, publications: list[Publication]) -> None:
        """Stop forwarding `publications`: their sections go `inactive` in everyone's
        subscribe connection (aiortc has no removeTrack), renegotiated in the background."""
        changed: dict[str, Member] = {}
        for publication in publications:
            for other in self.members.values():
                key = (owner.id, publication.source)
                subscription = other.subscriptions.get(key)
                if subscription is not None and subscription.track.publication is publication:
                    del other.subscriptions[key]
                    subscription.transceiver.direction = "inactive"
                    changed[other.id] = other
            publication.close()
        for other in changed.values():
            pc = other.subscribe_pc
            if pc is not None and sum(t.direction == "inactive"
                                      for t in pc.getTransceivers()) > MAX_INACTIVE_SECTIONS:
                self.spawn(self._subscribe_lost(other, pc, COMPACT_MESSAGE),
                           name=f"compact.{other.id}")
            else:
                self.spawn(self._renegotiate(other), name=f"negotiate.{other.id}")

    def _on_publish_state(self, member: Member, pc: RTCPeerConnection) -> None:
        if pc.connectionState not in ("failed", "closed") or self.closed:
            return
        if pc is not member.publish_pc or self.members.get(member.id) is not member:
            return
        log.info("member %s publish connection %s; replacing it", member.id, pc.connectionState)
        self.spawn(self._publish_lost(member, pc), name=f"publish-lost.{member.id}")

    async def _publish_lost(self, member: Member, pc: RTCPeerConnection) -> None:
        await self._reset_publish(member, pc)
        await self.send(member.id, {
            "type": "publish-lost",
            "message": "Your publish connection failed; publish again on a fresh one.",
        })

    # --- subscribe side (the server offers) -----------------------------------------------
    async def _start_subscribe(self, member: Member) -> None:
        """Give `member` a fresh subscribe connection carrying everyone's publications."""
        pc = peer_connection(self._servers_for(member))
        pc.on("connectionstatechange", lambda: self._on_subscribe_state(member, pc))
        member.subscribe_pc = pc
        member.subscriptions = {}
        member.negotiating = member.renegotiate = member.unsettled = False
        for other in self.members.values():
            if other is not member:
                for publication in other.publications.values():
                    self._subscribe(member, publication)
        # The subscribe connection always carries a data channel, so it can be negotiated
        # before anyone publishes. Created after the transceivers: with MAX_BUNDLE, aiortc
        # 1.16 never starts ICE when the data channel was created first (measured).
        pc.createDataChannel("sfu")
        await self._negotiate(member)

    async def resubscribe(self, member_id: str) -> None:
        """Replace the member's subscribe connection (after `subscribe-lost`, or whenever
        the client lost its own): a fresh `subscribe-offer` follows."""
        member = self.members[member_id]
        old = member.subscribe_pc
        self._drop_subscriptions(member)
        member.subscribe_pc = None  # so closing the old one is not reported as a loss
        if old is not None:
            await close_connection(old)
        await self._start_subscribe(member)

    def _drop_subscriptions(self, member: Member) -> None:
        for subscription in member.subscriptions.values():
            subscription.track.publication.unsubscribe(subscription.track)
        member.subscriptions = {}
        member.negotiating = member.renegotiate = member.unsettled = False

    def _on_subscribe_state(self, member: Member, pc: RTCPeerConnection) -> None:
        if self.closed or pc is not member.subscribe_pc \
                or self.members.get(member.id) is not member:
            return
        if pc.connectionState == "connected" and member.unsettled:
            # An answer applied while the connection was coming up left its new senders
            # unstarted (see settled): the same offer again, now connected, starts them.
            member.unsettled = False
            self.spawn(self._renegotiate(member), name=f"negotiate.{member.id}")
        elif pc.connectionState in ("failed", "closed"):
            self.spawn(self._subscribe_lost(member, pc), name=f"subscribe-lost.{member.id}")

    async def _subscribe_lost(self, member: Member, pc: RTCPeerConnection,
                              message: str = LOST_MESSAGE) -> None:
        """A dead subscribe connection (ICE consent expired, DTLS failed, closed), or one
        being compacted: forward nothing more to it, close it, and tell the member, who
        may `resubscribe`."""
        if pc is not member.subscribe_pc or self.members.get(member.id) is not member:
            return
        log.info("member %s subscribe connection %s: %s", member.id, pc.connectionState,
                 message)
        self._drop_subscriptions(member)
        await close_connection(pc)
        await self.send(member.id, {"type": "subscribe-lost", "message": message})
        await self.send(member.id, self.participants_event(member))

    def _subscribe(self, member: Member, publication: Publication) -> bool:
        """Add a forwarded track of `publication` to member's subscribe connection; False
        (and nothing added) when that connection is gone."""
        pc = member.subscribe_pc
        if pc is None or pc.signalingState == "closed" or pc.connectionState == "failed":
            return False
        track = publication.subscribe()
        try:
            transceiver = pc.addTransceiver(track, direction="sendonly")
        except Exception:
            log.exception("subscribing %s failed", member.id)
            publication.unsubscribe(track)
            return False
        # One stream id per participant, so browsers keep each person's audio and video in
        # sync (aiortc gives every track of a connection the same one).
        # A shared screen is a stream of its own: it is not lip-synced with the camera.
        suffix = "-screen" if publication.source == "screen" else ""
        transceiver.sender._stream_id = f"parley-{publication.owner}{suffix}"
        prefer_forwarded_codecs(transceiver)
        hooks.on_keyframe_request(transceiver.sender, publication.request_keyframe)
        member.subscriptions[(publication.owner, publication.source)] = Subscription(
            track, transceiver
        )
        return True

    async def _renegotiate(self, member: Member) -> None:
        """A background renegotiation: one that fails costs only this member its subscribe
        connection (it is told and may resubscribe), never the others their update."""
        pc = member.subscribe_pc
        try:
            await self._negotiate(member)
        except Exception:
            log.warning("renegotiating %s failed", member.id, exc_info=True)
            if pc is not None:
                await self._subscribe_lost(member, pc)

    async def _negotiate(self, member: Member) -> None:
        """Send the member a new subscribe offer, or mark that one is needed after the
        current one is answered."""
        if member.negotiating:
            member.renegotiate = True
            return
        pc = member.subscribe_pc
        if (self.closed or self.members.get(member.id) is not member or pc is None
                or pc.signalingState == "closed"):
            return
        member.negotiating = True
        try:
            if pc.remoteDescription is not None and not await settled(pc):
                member.unsettled = True
            if pc is not member.subscribe_pc:
                return  # replaced meanwhile (resubscribe): the new one negotiates itself
            member.renegotiate = False
            await pc.setLocalDescription(await pc.createOffer())
        except BaseException:
            if pc is member.subscribe_pc:
                member.negotiating = False
            raise
        await self.send(member.id, self.participants_event(member))
        await self.send(member.id, {"type": "subscribe-offer", "sdp": pc.localDescription.sdp})

    async def subscribe_answer(self, member_id: str, answer_sdp: str) -> None:
        """Apply the member's answer. A failed answer costs the member its subscribe
        connection (`subscribe-lost`; it resubscribes): the client has applied its answer
        and the server has not, a state neither side can renegotiate from (an aiortc client
        then never starts the new receivers), and an offer never stays pending."""
        member = self.members[member_id]
        pc = member.subscribe_pc
        if pc is None or pc.signalingState == "closed":
            raise ProtocolError(protocol.SUBSCRIBE_LOST,
                                "Your subscribe connection is gone; send 'resubscribe'.")
        try:
            await pc.setRemoteDescription(RTCSessionDescription(answer_sdp, "answer"))
        except Exception as error:
            log.info("subscribe answer of %s failed: %r", member_id, error)
            await self._subscribe_lost(member, pc)
            raise ProtocolError(
                protocol.ANSWER_FAILED,
                f"The subscribe answer could not be applied ({error!r}); the subscribe "
                "connection was closed: send 'resubscribe'.") from error
        member.negotiating = False
        if member.renegotiate:
            # In the background: the next offer waits for this connection to come up
            # (settled), up to 10 s, and the call's other commands must not wait with it (a
            # relayed 6-person call took 8-32 s to connect while they did: the others' ICE
            # started only when their answers got their turn).
            self.spawn(self._renegotiate(member), name=f"negotiate.{member.id}")

    # --- state ----------------------------------------------------------------------------
    async def set_muted(self, member_id: str, audio: bool, video: bool) -> None:
        self.members[member_id].muted = {"audio": audio, "video": video}
        await self.broadcast_participants()

    async def set_captions(self, on: bool) -> None:
        """Start or stop live captions for everyone's audio (decoded only while on)."""
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
            for source in SOURCES:
                subscription = viewer.subscriptions.get((member.id, source))
                if subscription is not None and subscription.transceiver.mid is not None:
                    mids[source] = subscription.transceiver.mid
            participants.append({
                "id": member.id, "name": member.name,
                # Who the member is in the room (presence's id), so pages can show the same
                # person the same way in the call and in "Here now".
                "participant": public_id_for(member.speaker_key) if member.speaker_key
                else None,
                "muted": dict(member.muted),
                "mids": mids, "publishing": sorted(member.publications), "you":
                member is viewer,
            })
        return {"type": "participants", "participants": participants,
                "captions": self.captions is not None}

    async def broadcast_participants(self) -> None:
        for member in list(self.members.values()):
            with contextlib.suppress(Exception):  # one member's channel must not stop the rest
                await self.send(member.id, self.participants_event(member))

    def stats(self) -> dict:
        return {
            "members": len(self.members),
            "publications": sum(len(m.publications) for m in self.members.values()),
            "forwarded_tracks": sum(len(m.subscriptions) for m in self.members.values()),
        }
