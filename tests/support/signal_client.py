"""A minimal signaling client over a real socket, for aiortc peers in tests."""

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

    async def close(self) -> None:
        if self.socket is not None:
            await self.socket.close()
