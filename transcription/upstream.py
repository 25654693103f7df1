"""OpenAI endpoints for browsers that talk to OpenAI directly (the WebSocket and WebRTC
modes): ephemeral client secrets minted through the official SDK, and the URLs to use, both
from settings so tests and offline demos point at the stand-in. The server's own API key is
used here and never leaves the server."""

from __future__ import annotations

from django.conf import settings
from openai import APIConnectionError, APIStatusError, OpenAI

from .engines import (
    UPSTREAM_AUTH_FAILED,
    UPSTREAM_QUOTA,
    UPSTREAM_UNAVAILABLE,
    upstream_session_config,
)


class UpstreamRefused(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def websocket_base() -> str:
    if settings.OPENAI_WS_BASE_URL:
        return settings.OPENAI_WS_BASE_URL.rstrip("/")
    base = settings.OPENAI_BASE_URL.rstrip("/")
    return "ws" + base.removeprefix("http") if base.startswith("http") else base


def urls() -> dict:
    return {
        "websocket_url": f"{websocket_base()}/realtime?intent=transcription",
        "calls_url": f"{settings.OPENAI_BASE_URL.rstrip('/')}/realtime/calls",
    }


def mint_client_secret() -> dict:
    """`value`, `expires_at` and `session` of a new transcription client secret."""
    client = OpenAI(api_key=settings.OPENAI_API_KEY, base_url=settings.OPENAI_BASE_URL,
                    max_retries=1, timeout=10)
    try:
        secret = client.realtime.client_secrets.create(
            expires_after={"anchor": "created_at",
                           "seconds": settings.TRANSCRIPTION["KEY_TTL_SECONDS"]},
            session=upstream_session_config())
    except APIStatusError as error:
        if error.status_code in (401, 403):
            raise UpstreamRefused(UPSTREAM_AUTH_FAILED,
                                  "OpenAI refused the server's API key.") from None
        if error.status_code == 429:
            raise UpstreamRefused(UPSTREAM_QUOTA,
                                  "OpenAI's quota or rate limit is exhausted.") from None
        raise UpstreamRefused(UPSTREAM_UNAVAILABLE,
                              f"OpenAI answered HTTP {error.status_code}.") from None
    except APIConnectionError:
        raise UpstreamRefused(UPSTREAM_UNAVAILABLE, "OpenAI cannot be reached.") from None
    return {"value": secret.value, "expires_at": secret.expires_at,
            "session": secret.session.model_dump(mode="json", exclude_none=True)}
