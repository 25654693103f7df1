"""What the assistant may spend: answers per room per minute (a token bucket, per session)
and tokens per room per UTC day (AssistantUsage rows, shared by every process through the
database). Usage is counted from each `response.done`'s `usage`, as OpenAI bills it."""

from __future__ import annotations

from datetime import UTC, datetime

from django.conf import settings
from django.db.models import F

from rooms.ratelimit import TokenBucket

from ..models import AssistantUsage


def response_bucket() -> TokenBucket:
    limits = settings.ASSISTANT
    return TokenBucket(limits["RESPONSE_BURST"], limits["RESPONSES_PER_MINUTE"] / 60)


def today():
    return datetime.now(UTC).date()


def tokens_today(room_id: int) -> int:
    usage = AssistantUsage.objects.filter(room_id=room_id, day=today()).first()
    return usage.tokens if usage else 0


def within_budget(room_id: int) -> bool:
    return tokens_today(room_id) < settings.ASSISTANT["DAILY_TOKEN_BUDGET"]


def count(room_id: int, *, responses: int = 0, input_tokens: int = 0, output_tokens: int = 0,
          tool_calls: int = 0, refused: int = 0) -> None:
    """Add to today's row of the room (created on first use)."""
    day = today()
    AssistantUsage.objects.get_or_create(room_id=room_id, day=day)
    AssistantUsage.objects.filter(room_id=room_id, day=day).update(
        responses=F("responses") + responses, input_tokens=F("input_tokens") + input_tokens,
        output_tokens=F("output_tokens") + output_tokens,
        tool_calls=F("tool_calls") + tool_calls, refused=F("refused") + refused)
