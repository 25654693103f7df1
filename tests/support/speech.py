"""Speech for tests: espeak-ng sentences as PCM16 mono 24 kHz with a faint noise floor
(espeak's perfectly silent gaps confuse recognisers; see ../shared/notes). sox runs with -R
(repeatable dither and noise), so the same sentences make the same audio every time."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

# What the browser caption tests' fake microphone says (tests/conftest.py: speaking_browser).
CAPTION_SENTENCES = ["good morning everyone", "please open the window", "thank you for listening"]


def speech_pcm24k(sentences: list[str], gap_seconds: float = 1.5, voice: str = "en-us") -> bytes:
    """The sentences spoken one after another (espeak-ng `voice`) with silence around each,
    as raw PCM."""
    if not shutil.which("espeak-ng") or not shutil.which("sox"):
        raise RuntimeError("espeak-ng and sox are missing: `make test` installs them")
    with tempfile.TemporaryDirectory() as tmp:
        parts = []
        for n, sentence in enumerate(sentences):
            raw = Path(tmp, f"s{n}.wav")
            subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(raw), sentence],
                           check=True)
            padded = Path(tmp, f"p{n}.wav")
            subprocess.run(["sox", "-R", str(raw), "-r", "24000", "-c", "1", "-b", "16",
                            str(padded), "pad", str(gap_seconds), "0"], check=True)
            parts.append(str(padded))
        joined = Path(tmp, "joined.wav")
        subprocess.run(["sox", "-R", *parts, str(joined), "pad", "0", str(gap_seconds)], check=True)
        with wave.open(str(joined)) as w:
            seconds = w.getnframes() / w.getframerate()
        noise = Path(tmp, "noise.wav")
        subprocess.run(["sox", "-R", "-n", "-r", "24000", "-c", "1", "-b", "16", str(noise),
                        "synth", f"{seconds:.3f}", "whitenoise", "vol", "0.003"], check=True)
        mixed = Path(tmp, "mixed.wav")
        subprocess.run(["sox", "-R", "-m", str(joined), str(noise), str(mixed)], check=True)
        with wave.open(str(mixed)) as w:
            return w.readframes(w.getnframes())


def speech_wav(sentences: list[str], path: Path, gap_seconds: float = 1.5) -> Path:
    """The same speech as a WAV file (a fake microphone for Chromium)."""
    pcm = speech_pcm24k(sentences, gap_seconds)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(24000)
        w.writeframes(pcm)
    return path


def said(text):
    """What a transcript says, as the sentences above are written: lower case, no
    punctuation, small numbers spelled out ("Good morning, everyone." -> "good morning
    everyone"). A list gives a list."""
    from transcription.scoring import words_of

    if isinstance(text, str):
        return " ".join(words_of(text))
    return [said(item) for item in text]
