"""Rooms and real-time chat: the foundation every other Parley app builds on (docs/rooms.md)."""
