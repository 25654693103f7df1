"""SFU-lite: group calls through an aiortc worker that forwards encoded media (docs/sfu.md)."""
