"""The functions the assistant may call, each acting only inside its own room and only with
the rights of the member who invited it (rechecked at every call). Arguments come from the
model, so they are validated like client input: unknown keys, wrong types and out-of-range
values are refused with a reason the model sees, and nothing runs.

A refusal or a result goes back to the model as the call's output (JSON) and to the room as
an `assistant.tool` event ("Assistant looked up the transcript"); every call is logged.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from rooms import services, writer
from rooms.access import admits
from rooms.models import Message, Room
from rooms.presence import presence_store

from ..models import CaptionSegment
from . import protocol

log = logging.getLogger(__name__)

MAX_ARGUMENT_CHARS = 8 * 1024  # a call's arguments as JSON text; questions are short
MAX_OUTPUT_CHARS = 16 * 1024  # what one call hands back to the model (tokens cost money)
MAX_QUERY_CHARS = 200

ROOM_PARAM = {"type": "string", "description": "The room's slug. Only this room is "
              "allowed; omit it."}


class ToolRefused(Exception):
    """A call that does not run; `code` and the message go to the model and the room."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Context:
    """Where a call acts: the session's room, on behalf of its inviter."""

    room: Room
    inviter_key: str


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, dict[str, Any]]  # JSON schema properties
    notice: str  # what the room is told ("Assistant looked up the transcript")
    run: Callable[[Context, dict[str, Any]], Awaitable[Any]]

    def spec(self) -> dict:
        """The tool as session.update's `tools` lists it."""
        return {"type": "function", "name": self.name, "description": self.description,
                "parameters": {"type": "object", "properties": self.parameters,
                               "additionalProperties": False}}


def _integer(value: Any, name: str, schema: dict) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ToolRefused("invalid_arguments", f"'{name}' must be an integer.")
    if not schema.get("minimum", value) <= value <= schema.get("maximum", value):
        raise ToolRefused("invalid_arguments", f"'{name}' must be between "
                          f"{schema['minimum']} and {schema['maximum']}.")
    return value


def _string(value: Any, name: str, schema: dict) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ToolRefused("invalid_arguments", f"'{name}' must be a non-empty string.")
    if len(value) > schema.get("maxLength", len(value)):
        raise ToolRefused("invalid_arguments", f"'{name}' is longer than "
                          f"{schema['maxLength']} characters.")
    return value.strip()


def parse_arguments(tool: Tool, raw: str, context: Context) -> dict[str, Any]:
    """The call's arguments, checked against the tool's schema and the session's room."""
    if not isinstance(raw, str) or len(raw) > MAX_ARGUMENT_CHARS:
        raise ToolRefused("invalid_arguments", "The arguments are missing or too long.")
    try:
        data = json.loads(raw or "{}")
    except ValueError:
        raise ToolRefused("invalid_arguments", "The arguments are not valid JSON.") from None
    if not isinstance(data, dict):
        raise ToolRefused("invalid_arguments", "The arguments must be a JSON object.")
    unknown = set(data) - set(tool.parameters)
    if unknown:
        raise ToolRefused("invalid_arguments", f"Unknown argument(s): {sorted(unknown)}.")
    if "room" in data and data.pop("room") != context.room.slug:
        raise ToolRefused("other_room", "Tools act only in this room.")
    checked = {}
    for name, value in data.items():
        schema = tool.parameters[name]
        check = _integer if schema["type"] == "integer" else _string
        checked[name] = check(value, name, schema)
    for name, schema in tool.parameters.items():
        if name not in checked and "default" in schema:
            checked[name] = schema["default"]
    return checked


# --- The tools -----------------------------------------------------------------------------

def _lines_of_chat(room_id: int, limit: int) -> list[str]:
    rows = Message.objects.filter(room_id=room_id).order_by("-seq").values_list(
        "author_name", "text", "sent_at")[:limit]
    return [f"[{sent:%H:%M}] {name}: {text}" for name, text, sent in reversed(rows)]


async def read_recent_chat(context: Context, args: dict) -> dict:
    lines = await database_sync_to_async(_lines_of_chat)(context.room.pk, args["limit"])
    return {"messages": lines}


def _lines_of_transcript(room_id: int, minutes: int) -> list[str]:
    since = datetime.now(UTC) - timedelta(minutes=minutes)
    rows = CaptionSegment.objects.filter(room_id=room_id, ended_at__gte=since).order_by(
        "started_at", "id").values_list("speaker_name", "text", "started_at")
    return [f"[{start:%H:%M}] {name}: {text}" for name, text, start in rows]


async def read_transcript(context: Context, args: dict) -> dict:
    lines = await database_sync_to_async(_lines_of_transcript)(context.room.pk,
                                                              args["minutes"])
    return {"minutes": args["minutes"], "transcript": lines}


async def list_participants(context: Context, args: dict) -> dict:
    members = await presence_store().members(context.room.pk)
    return {"here": [{"name": p.name, **({"kind": p.kind} if p.kind else {})}
                     for p in members]}


async def post_to_chat(context: Context, args: dict) -> dict:
    text = args["text"][:settings.PARLEY["MAX_TEXT_CHARS"]]
    client_id = f"assistant-post-{secrets.token_hex(8)}"
    result = await writer.post_message(context.room, services.PostRequest(
        protocol.ASSISTANT, text, client_id))
    return {"posted": True, "seq": result.message.seq}


def _search(room_id: int, query: str, limit: int) -> dict:
    messages = Message.objects.filter(room_id=room_id, text__icontains=query).order_by(
        "-seq").values_list("author_name", "text", "sent_at")[:limit]
    segments = CaptionSegment.objects.filter(room_id=room_id, text__icontains=query).order_by(
        "-started_at").values_list("speaker_name", "text", "started_at")[:limit]
    return {"chat": [f"[{t:%Y-%m-%d %H:%M}] {n}: {x}" for n, x, t in messages],
            "transcript": [f"[{t:%Y-%m-%d %H:%M}] {n}: {x}" for n, x, t in segments]}


async def search_history(context: Context, args: dict) -> dict:
    return await database_sync_to_async(_search)(context.room.pk, args["query"],
                                                 args["limit"])


TOOLS: dict[str, Tool] = {tool.name: tool for tool in (
    Tool("read_recent_chat", "Read the room's most recent chat messages, oldest first.",
         {"limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 30},
          "room": ROOM_PARAM},
         "read the recent chat", read_recent_chat),
    Tool("read_transcript", "Read what was said aloud in the room (captions) in the last "
         "few minutes, for summaries.",
         {"minutes": {"type": "integer", "minimum": 1, "maximum": 120, "default": 10},
          "room": ROOM_PARAM},
         "looked up the transcript", read_transcript),
    Tool("list_participants", "List who is in the room now.", {"room": ROOM_PARAM},
         "looked up who is here", list_participants),
    Tool("post_to_chat", "Post a separate chat message in the room (for lists or notes "
         "worth keeping apart from the answer).",
         {"text": {"type": "string", "maxLength": 4000}, "room": ROOM_PARAM},
         "posted to the chat", post_to_chat),
    Tool("search_history", "Search the room's chat history and transcript for words.",
         {"query": {"type": "string", "maxLength": MAX_QUERY_CHARS},
          "limit": {"type": "integer", "minimum": 1, "maximum": 20, "default": 10},
          "room": ROOM_PARAM},
         "searched the room's history", search_history),
)}

REQUIRED = {"post_to_chat": ("text",), "search_history": ("query",)}


def specs() -> list[dict]:
    specs = []
    for tool in TOOLS.values():
        spec = tool.spec()
        if tool.name in REQUIRED:
            spec["parameters"]["required"] = list(REQUIRED[tool.name])
        specs.append(spec)
    return specs


@dataclass(frozen=True)
class Outcome:
    name: str
    output: str  # JSON for the model
    event: dict  # the room's assistant.tool event


async def call(context: Context, name: str, raw_arguments: str) -> Outcome:
    """Run one call the model asked for; never raises (a failure is the call's output)."""
    tool = TOOLS.get(name)
    notice = tool.notice if tool else f"tried an unknown tool ({name[:40]})"
    try:
        if tool is None:
            raise ToolRefused("unknown_tool", f"There is no tool named {name!r}.")
        args = parse_arguments(tool, raw_arguments, context)
        allowed = await database_sync_to_async(admits)(context.room.pk, context.inviter_key)
        if not allowed:
            raise ToolRefused("access_lost", "The member who invited the assistant no longer "
                              "has access to this room.")
        result = await tool.run(context, args)
    except ToolRefused as refusal:
        log.info("assistant tool %s in room %s refused: %s", name, context.room.pk, refusal)
        output = json.dumps({"error": {"code": refusal.code, "message": str(refusal)}})
        return Outcome(name, output, {"type": protocol.TOOL, "name": name, "ok": False,
                                      "summary": f"{protocol.ASSISTANT_NAME} {notice}: refused",
                                      "code": refusal.code, "message": str(refusal)})
    except Exception:
        log.exception("assistant tool %s failed in room %s", name, context.room.pk)
        output = json.dumps({"error": {"code": "tool_failed", "message": "The tool failed."}})
        return Outcome(name, output, {"type": protocol.TOOL, "name": name, "ok": False,
                                      "summary": f"{protocol.ASSISTANT_NAME} {notice}: failed",
                                      "code": "tool_failed", "message": "The tool failed."})
    log.info("assistant tool %s in room %s: %s", name, context.room.pk, args)
    output = json.dumps(result, ensure_ascii=False, default=str)
    if len(output) > MAX_OUTPUT_CHARS:
        output = json.dumps({"truncated": True, "text": output[:MAX_OUTPUT_CHARS]})
    return Outcome(name, output, {"type": protocol.TOOL, "name": name, "ok": True,
                                  "summary": f"{protocol.ASSISTANT_NAME} {notice}"})
