"""Live transcription and shared captions: engines (OpenAI Realtime, offline), the
Realtime-compatible endpoints, client-reported captions, stored segments and their exports.
See docs/transcription.md."""
