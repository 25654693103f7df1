"""The signaling socket (`ws/signal/<slug>/`): direct calls between participants of a room.

A connection is one tab of a participant. It joins a channel-layer group per participant,
so an invitation reaches every tab of the callee, on whatever server process each is; the
directory (calls.py) decides who may do what, atomically across processes. Offers, answers
and candidates go straight to the other end's connection; the server checks their shape and
never reads them further.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets

from rooms.sockets import RoomSocket

from . import calls, protocol
from .calls import Call, End
from .ice import ice_servers_for, transport_policy

log = logging.getLogger(__name__)


def participant_group(room_id: int, participant: str) -> str:
    """Every signaling connection of one participant in one room."""
    return f"parley.signal.{room_id}.{participant}"


def _end_dict(end: End) -> dict:
    return {"id": end.id, "name": end.name}


class SignalConsumer(RoomSocket):
    """One tab's signaling connection in one room."""

    rate_settings = ("SIGNAL_RATE_BURST", "SIGNAL_RATE_PER_SECOND")
    frame_setting = "SIGNAL_MAX_FRAME_BYTES"
    group: str | None = None

    async def joined(self) -> None:
        """Called once admitted: become reachable, then say who we are and which ICE servers
        and limits apply."""
        self.directory = calls.directory()
        self.ring_seconds = self.limits["SIGNAL_INVITE_TIMEOUT_SECONDS"]
        # Calls this connection is an end of, as last heard, and the timers of those it rings.
        self.mine: dict[str, Call] = {}
        self.ring_timers: dict[str, asyncio.Task] = {}
        self.group = participant_group(self.room.pk, self.me.id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.directory.arrive(self.room.pk, self.me.id, self.me.name, self.channel_name)
        self.spawn(self._heartbeat(), name="heartbeat")
        await self.send_json({
            "type": "hello",
            "you": self.me.as_dict(),
            "ice_servers": ice_servers_for(self.me.id),
            "ice_transport_policy": transport_policy(),
            "limits": {
                "invite_timeout_seconds": self.ring_seconds,
                "max_pending_invites": self.limits["SIGNAL_MAX_PENDING_INVITES"],
                "max_direct_calls": self.limits["SIGNAL_MAX_DIRECT_CALLS"],
                "max_file_bytes": self.limits["SIGNAL_MAX_FILE_BYTES"],
            },
        })

    async def closed(self) -> None:
        """Called once the socket ended, however: end this connection's calls (the other ends
        are told `gone`), and if it was the participant's last tab, the invitations ringing
        for them."""
        if self.group is None:
            return
        for call_id in list(self.mine):
            with contextlib.suppress(Exception):
                call = await calls.drop(self.directory, call_id)
                if call is not None:
                    await self._tell_ended(call, protocol.GONE, include_self=False)
        with contextlib.suppress(Exception):
            left = await self.directory.depart(self.room.pk, self.me.id, self.channel_name)
            if left == 0:
                for call in await self.directory.calls_of(self.room.pk, self.me.id):
                    if call.state == calls.RINGING and call.callee.id == self.me.id:
                        if await calls.drop(self.directory, call.id) is not None:
                            await self._send_to(call.caller.channel, "signal.ended",
                                                call=call.id, reason=protocol.GONE)
        with contextlib.suppress(Exception):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def handle(self, data: dict) -> None:
        message = protocol.parse_signal_message(
            data, max_sdp_chars=self.limits["SIGNAL_MAX_SDP_CHARS"]
        )
        if isinstance(message, protocol.Invite):
            await self._invite(message)
        elif isinstance(message, protocol.CallAction):
            if message.kind == "accept":
                await self._accept(message.call)
            else:
                await self._end_call(message.call, message.kind)
        else:
            await self._relay(message)

    async def _invite(self, message: protocol.Invite) -> None:
        if message.to == self.me.id:
            raise protocol.CallRefused(protocol.SELF_CALL, "You cannot call yourself.",
                                       ref=message.client_id)
        name = await self.directory.present(self.room.pk, message.to)
        if name is None:
            raise protocol.CallRefused(protocol.NOT_HERE, "That person is not here any more.",
                                       ref=message.client_id)
        call = Call(
            id=secrets.token_hex(8), room=self.room.pk, mode=message.mode,
            caller=End(self.me.id, self.me.name, self.channel_name),
            callee=End(message.to, name, None),
        )
        try:
            await self.directory.invite(call, calls.Limits.from_settings())
        except protocol.CallRefused as refused:
            refused.ref = message.client_id
            raise
        self.mine[call.id] = call
        self.ring_timers[call.id] = self.spawn(self._ring_timeout(call.id), name="ring")
        await self.channel_layer.group_send(
            participant_group(self.room.pk, message.to),
            {"type": "signal.invite", "call": call.id, "from": _end_dict(call.caller),
             "mode": call.mode, "expires_in": self.ring_seconds},
        )
        ringing = {"type": "ringing", "call": call.id, "to": _end_dict(call.callee),
                   "mode": call.mode, "expires_in": self.ring_seconds}
        if message.client_id is not None:
            ringing["client_id"] = message.client_id
        await self.send_json(ringing)

    async def _accept(self, call_id: str) -> None:
        call = await calls.accept(self.directory, call_id, self.room.pk, self.me.id,
                                  self.channel_name)
        self.mine[call.id] = call
        await self._send_to(call.caller.channel, "signal.accepted", call=call.to_json())
        await self.channel_layer.group_send(self.group, {
            "type": "signal.taken", "call": call.id, "by": self.channel_name})
        await self.send_json({"type": "accepted", "call": call.id,
                              "peer": _end_dict(call.caller), "mode": call.mode,
                              "initiator": False})

    async def _end_call(self, call_id: str, action: str) -> None:
        call, reason = await calls.end(self.directory, call_id, self.room.pk, self.me.id,
                                       self.channel_name, action)
        await self._tell_ended(call, reason, include_self=True)

    async def _tell_ended(self, call: Call, reason: str, *, include_self: bool) -> None:
        """Tell both ends (every callee tab while it rang) that `call` ended."""
        self._forget(call.id)
        message = {"type": "signal.ended", "call": call.id, "reason": reason}
        if call.state == calls.RINGING:
            # The callee's group reaches each of its tabs, this one too if it is the callee.
            await self.channel_layer.group_send(
                participant_group(call.room, call.callee.id), message)
            if call.callee.id == self.me.id:
                include_self = False
        elif call.callee.channel not in (None, self.channel_name):
            await self.channel_layer.send(call.callee.channel, message)
        if call.caller.channel != self.channel_name:
            await self.channel_layer.send(call.caller.channel, message)
        if include_self:
            await self.send_json({"type": "call-ended", "call": call.id, "reason": reason})

    async def _relay(self, message: protocol.Relay) -> None:
        call = self.mine.get(message.call)
        if call is None or call.state != calls.ACTIVE:
            call = await self.directory.get(message.call)
        other = calls.relay_target(call, message.call, self.room.pk, self.channel_name)
        await self._send_to(other.channel, "signal.relay", event={
            "type": message.kind, "call": message.call, **message.payload})

    async def _ring_timeout(self, call_id: str) -> None:
        await asyncio.sleep(self.ring_seconds)
        self.ring_timers.pop(call_id, None)
        call = await calls.expire_ringing(self.directory, call_id)
        if call is not None:
            await self._tell_ended(call, protocol.TIMEOUT, include_self=True)

    def _forget(self, call_id: str) -> None:
        self.mine.pop(call_id, None)
        timer = self.ring_timers.pop(call_id, None)
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()

    async def _send_to(self, channel: str, kind: str, **fields) -> None:
        await self.channel_layer.send(channel, {"type": kind, **fields})

    # Messages from other connections, through the channel layer.

    async def signal_invite(self, message: dict) -> None:
        """Called on each of the callee's connections for a new invitation."""
        await self.send_json({"type": "invite", "call": message["call"],
                              "from": message["from"], "mode": message["mode"],
                              "expires_in": message["expires_in"]})

    async def signal_accepted(self, message: dict) -> None:
        """Called on the caller's connection when the callee accepted."""
        call = Call.from_json(message["call"])
        if call.id not in self.mine:
            return  # we already cancelled or it timed out here
        self.mine[call.id] = call
        timer = self.ring_timers.pop(call.id, None)
        if timer is not None:
            timer.cancel()
        await self.send_json({"type": "accepted", "call": call.id,
                              "peer": _end_dict(call.callee), "mode": call.mode,
                              "initiator": True})

    async def signal_taken(self, message: dict) -> None:
        """Called on each of the callee's connections once one of them accepted."""
        if message["by"] != self.channel_name:
            await self.send_json({"type": "call-ended", "call": message["call"],
                                  "reason": protocol.ANSWERED_ELSEWHERE})

    async def signal_ended(self, message: dict) -> None:
        """Called when the other end (or the timer) ended a call."""
        self._forget(message["call"])
        await self.send_json({"type": "call-ended", "call": message["call"],
                              "reason": message["reason"]})

    async def signal_relay(self, message: dict) -> None:
        """Called with an offer, answer or candidate from the other end of one of our calls."""
        if message["event"]["call"] in self.mine:
            await self.send_json(message["event"])

    async def _heartbeat(self) -> None:
        """Keep this connection and its calls from expiring (and come back after a Redis
        restart forgot them)."""
        while True:
            await asyncio.sleep(self.limits["HEARTBEAT_SECONDS"])
            try:
                await self.directory.arrive(self.room.pk, self.me.id, self.me.name,
                                            self.channel_name)
                await self.directory.touch(list(self.mine))
            except Exception:
                log.warning("could not renew a signaling connection", exc_info=True)
