"""Peer-to-peer calls: the signaling relay for direct chat and 1:1 video (docs/signaling.md)."""
