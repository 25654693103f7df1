"""Stored caption segments: transcript downloads (.txt, .vtt, .srt) and admin."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from rooms import services
from transcription.formats import to_srt, to_txt, to_vtt
from transcription.models import CaptionSegment

T0 = datetime(2026, 11, 23, 9, 0, 0, tzinfo=UTC)


def segment(room, n: int, speaker: str, text: str, start: float, end: float) -> CaptionSegment:
    return CaptionSegment.objects.create(
        room=room, speaker_key=f"g:{speaker}", speaker_name=speaker, item_id=f"item_{n}",
        previous_item_id=f"item_{n - 1}" if n else "", text=text,
        started_at=T0 + timedelta(seconds=start), ended_at=T0 + timedelta(seconds=end),
        engine=CaptionSegment.Engine.OFFLINE,
    )


@pytest.fixture
def room_with_captions(db):
    room = services.create_room("Talk", private=False)
    segment(room, 0, "Ann", "hello everyone", 0.5, 2.25)
    segment(room, 1, "Bob", "hi <Ann> &\nwelcome", 3, 4.5)
    segment(room, 2, "Ann", "let us start", 3661.0, 3662.004)
    return room


def ordered(room):
    return list(CaptionSegment.objects.filter(room=room).order_by("started_at"))


def test_text_vtt_and_srt(room_with_captions):
    segments = ordered(room_with_captions)
    assert to_txt(segments).splitlines() == [
        "[09:00:00] Ann: hello everyone",
        "[09:00:03] Bob: hi <Ann> & welcome",
        "[10:01:01] Ann: let us start",
    ]
    assert to_vtt(segments).splitlines() == [
        "WEBVTT", "",
        "00:00:00.000 --> 00:00:01.750", "<v Ann>hello everyone", "",
        "00:00:02.500 --> 00:00:04.000", "<v Bob>hi &lt;Ann&gt; &amp; welcome", "",
        "01:01:00.500 --> 01:01:01.504", "<v Ann>let us start",
    ]
    assert to_srt(segments).splitlines() == [
        "1", "00:00:00,000 --> 00:00:01,750", "Ann: hello everyone", "",
        "2", "00:00:02,500 --> 00:00:04,000", "Bob: hi <Ann> & welcome", "",
        "3", "01:01:00,500 --> 01:01:01,504", "Ann: let us start",
    ]
    assert to_vtt([]) == "WEBVTT\n" and to_srt([]) == ""


def test_downloads_are_for_members_only(room_with_captions):
    slug = room_with_captions.slug
    visitor = Client()
    assert b'id="join-form"' in visitor.get(f"/rooms/{slug}/transcript.txt").content
    visitor.post(f"/rooms/{slug}/join/", {"name": "Zed"})
    for extension, content_type in [("txt", "text/plain"), ("vtt", "text/vtt"),
                                    ("srt", "application/x-subrip")]:
        response = visitor.get(f"/rooms/{slug}/transcript.{extension}")
        assert response.status_code == 200
        assert response["Content-Type"].startswith(content_type)
        assert f'filename="{slug}-transcript.{extension}"' in response["Content-Disposition"]
        assert "let us start" in response.content.decode()
    assert visitor.get(f"/rooms/{slug}/transcript.pdf").status_code == 404


def test_an_item_is_stored_once_per_room(room_with_captions):
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError), transaction.atomic():
        segment(room_with_captions, 0, "Ann", "again", 9, 10)


def test_admin_searches_and_exports_segments(room_with_captions):
    staff = get_user_model().objects.create_user("boss", password="x", is_staff=True,
                                                 is_superuser=True)
    client = Client()
    client.force_login(staff)
    found = client.get("/admin/transcription/captionsegment/", {"q": "welcome"}).content.decode()
    assert "welcome" in found and "let us start" not in found
    by_speaker = client.get("/admin/transcription/captionsegment/", {"q": "Bob"}).content
    assert b"welcome" in by_speaker and b"hello everyone" not in by_speaker
    ids = [s.pk for s in ordered(room_with_captions)]
    response = client.post("/admin/transcription/captionsegment/",
                           {"action": "export_segments", "_selected_action": ids})
    text = response.content.decode()
    assert text.startswith("# Talk\n[09:00:00] Ann: hello everyone\n")
    assert text.count("\n") == 4
