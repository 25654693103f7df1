from django.apps import AppConfig


class TranscriptionConfig(AppConfig):
    name = "transcription"
    verbose_name = "Transcription and captions"

    def ready(self) -> None:
        """Plug group-call captions into the SFU: signaling calls what is registered and
        never imports transcription."""
        from signaling.sfu.captions import register_transcriber

        from .audio import transcribe_call_speaker

        register_transcriber(transcribe_call_speaker)
