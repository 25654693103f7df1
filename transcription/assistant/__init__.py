"""The room assistant (issue #15): an OpenAI Realtime conversation invited into a room.

Design and wire events: docs/assistant.md. `manager` starts and ends sessions (one per room
across processes, `lease`), `session` is one conversation's single owning task, `tools` the
functions it may call (room-scoped, validated like client input), `budget` what it may
spend, `protocol` the room events it sends.
"""
