"""A minimal signaling client over a real socket, for aiortc peers in tests and benches."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

import websockets


class SignalSocket:
    def __init__(self, base_url: str, slug: str, session_id: str):
        self.base_url = base_url
        self.slug = slug
        self.session_id = session_id
        self.socket = None
        self.hello: dict | None = None

    async def open(self) -> dict:
        netloc = urlsplit(self.base_url).netloc
        self.socket = await websockets.connect(
            f"ws://{netloc}/ws/signal/{self.slug}/",
            origin=self.base_url,
            additional_headers={"Cookie": f"sessionid={self.session_id}"},
            max_size=2**20,
        )
        self.hello = await self.next()
        assert self.hello["type"] == "hello", self.hello
        return self.hello

    async def send(self, **message) -> None:
        await self.socket.send(json.dumps(message))

    async def next(self, kind: str | None = None, timeout: float = 15) -> dict:
        """The next event (of type `kind`, skipping others)."""
        async with asyncio.timeout(timeout):
            while True:
                event = json.loads(await self.socket.recv())
                if kind is None or event["type"] == kind:
                    return event

    @property
    def id(self) -> str:
        """This participant's public id (as in the room's presence)."""
        return self.hello["you"]["id"]

    async def invite(self, callee: SignalSocket, mode: str = "chat") -> str:
        """Invite `callee`; returns the call id from `ringing`."""
        await self.send(type="invite", to=callee.id, mode=mode)
        return (await self.next("ringing"))["call"]

    async def call(self, callee: SignalSocket, mode: str = "chat") -> str:
        """Invite `callee` and have it accept; both have their `accepted` when this returns."""
        call = await self.invite(callee, mode)
        invite = await callee.next("invite")
        assert invite["call"] == call, invite
        await callee.send(type="accept", call=call)
        assert (await callee.next("accepted"))["initiator"] is False
        assert (await self.next("accepted"))["initiator"] is True
        return call

    async def close(self) -> None:
        if self.socket is not None:
            await self.socket.close()
