"""Live transcription and shared captions: stored caption segments and transcript exports.

The engines (OpenAI Realtime, offline) and the Realtime-compatible proxy socket are still to
come (issue 5); this app holds what they write and what users download.
"""
