"""Minting a transcription key over HTTP, as a page does: for bots, tests and benchmarks.

The key then opens `/v1/realtime` with any Realtime API client, the official SDK included:
`AsyncOpenAI(api_key=key, base_url=f"{parley}/v1", websocket_base_url=f"ws://.../v1")`.
"""

from __future__ import annotations

import httpx


async def mint_guest_key(base_url: str, slug: str, name: str, mode: str = "proxy") -> dict:
    """Join public room `slug` as guest `name` and mint a key there; returns the JSON reply
    of `POST /api/transcription-session` (`value`, `expires_at`, `websocket_url`, ...)."""
    async with httpx.AsyncClient(base_url=base_url, follow_redirects=False) as http:
        await http.get(f"/rooms/{slug}/")
        referer = {"Referer": f"{base_url}/rooms/{slug}/"}
        joined = await http.post(
            f"/rooms/{slug}/join/",
            data={"name": name, "csrfmiddlewaretoken": http.cookies["csrftoken"]},
            headers=referer)
        if joined.status_code != 302:
            raise RuntimeError(f"join failed: {joined.status_code}")
        reply = await http.post(
            "/api/transcription-session", json={"room": slug, "mode": mode},
            headers={**referer, "X-CSRFToken": http.cookies["csrftoken"]})
        reply.raise_for_status()
        return reply.json()
