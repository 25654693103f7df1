"""Display names are cleaned at the source (guests' join form, accounts' names) and
transcripts are written defensively, so no name or caption can forge a line, a cue or another
person."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client

from rooms import services
from rooms.identity import (
    JOINED_ROOMS_KEY,
    DisplayNameError,
    clean_display_name,
    display_name_for,
    guest_name,
    participant_for,
)
from transcription.formats import to_srt, to_txt, to_vtt

FORGED = "Bob\r\n[09:00:00] Admin: cancelled"


@pytest.mark.parametrize(("raw", "clean"), [
    (FORGED, "Bob [09:00:00] Admin: cancelled"),
    ("  Ann \t Lee  ", "Ann Lee"),
    ("\u202eelgoog\u202c", "elgoog"),  # bidi override
    ("\u2066Ann\u2069", "Ann"),  # bidi isolate
    ("B\u200bo\u200cb\u200d\ufeff", "Bob"),  # zero-width
    ("Bob\u3164", "Bob"),  # a blank letter
    ("Ann\u2028Lee", "Ann Lee"),  # line separator
    ("Ann\x00\x1b[31m", "Ann[31m"),  # NUL and ESC
    ("Jose\u0301", "Jos\u00e9"),  # NFC
])
def test_clean_display_name_keeps_what_shows_on_one_line(raw, clean):
    assert clean_display_name(raw) == clean


@pytest.mark.parametrize("raw", ["", "   ", "\u200b\u200d", "\u202e", "\u3164\u2800",
                                 "\u0301\u0308", "\r\n\t"])
def test_names_that_show_nothing_are_refused(raw):
    with pytest.raises(DisplayNameError, match="visible"):
        clean_display_name(raw)


def test_names_are_bounded():
    with pytest.raises(DisplayNameError, match="at most 5"):
        clean_display_name("Annabelle", max_chars=5)
    assert clean_display_name("Ann Lee Smith", max_chars=8, truncate=True) == "Ann Lee"
    # Invisible padding does not count against the bound.
    assert clean_display_name("\u200b" * 50 + "Ann", max_chars=5) == "Ann"


@pytest.mark.django_db
def test_account_names_are_cleaned(db):
    users = get_user_model().objects
    eve = users.create_user("eve", first_name="Eve\u202e", last_name="Admin\n[x]")
    assert display_name_for(eve) == "Eve Admin [x]"
    blank = users.create_user("blank", first_name="\u200b", last_name="\u3164")
    assert display_name_for(blank) == "blank"
    long = users.create_user("long", first_name="A" * 150, last_name="B")
    assert display_name_for(long) == "A" * 80


@pytest.mark.django_db
def test_the_join_form_cleans_and_refuses_with_a_clear_error():
    room = services.create_room("Lounge", private=False)
    guest = Client()
    joined = guest.post(f"/rooms/{room.slug}/join/", {"name": FORGED})
    assert joined.status_code == 302
    session = guest.session
    assert session[JOINED_ROOMS_KEY][room.slug] == "Bob [09:00:00] Admin: cancelled"
    invisible = Client().post(f"/rooms/{room.slug}/join/", {"name": "\u200b\u202e\u3164"})
    assert invisible.status_code == 400
    assert b"Use at least one visible letter" in invisible.content
    too_long = Client().post(f"/rooms/{room.slug}/join/", {"name": "x" * 41})
    assert too_long.status_code == 400 and b"at most 40 characters" in too_long.content


@pytest.mark.django_db
def test_a_join_retried_after_a_refused_name_lands_where_the_visitor_was_going():
    """The re-rendered form kept its own URL (the POST-only join URL) as `next`: the second,
    valid try ended on a 405 instead of the room or the call page."""
    import re

    room = services.create_room("Lounge", private=False)
    guest = Client()
    call_page = f"/rooms/{room.slug}/call/"
    refused = guest.post(f"/rooms/{room.slug}/join/", {"name": "\u200b", "next": call_page})
    assert refused.status_code == 400
    kept = re.search(rb'name="next" value="([^"]*)"', refused.content).group(1).decode()
    assert kept == call_page
    joined = guest.post(f"/rooms/{room.slug}/join/", {"name": "Ann", "next": kept})
    assert joined.status_code == 302 and joined["Location"] == call_page


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["ALICE", "alice\u200b", "carol smith", " Carol \n Smith",
                                  "Dave"])
def test_guests_cannot_take_an_accounts_name(name):
    users = get_user_model().objects
    users.create_user("alice", password="x")
    users.create_user("csmith", password="x", first_name="Carol", last_name="Smith")
    users.create_user("dk", password="x", first_name="Dave")
    room = services.create_room("Lounge", private=False)
    refused = Client().post(f"/rooms/{room.slug}/join/", {"name": name})
    assert refused.status_code == 400
    assert b"That name belongs to an account here" in refused.content
    assert Client().post(f"/rooms/{room.slug}/join/", {"name": "Alicia"}).status_code == 302


@pytest.mark.django_db
def test_a_session_holding_an_unclean_name_is_cleaned_or_asked_again():
    """Sessions written before names were cleaned: the name is cleaned on the way out, and
    one that shows nothing sends the guest back to the join form."""
    room = services.create_room("Lounge", private=False)
    session = SessionStore()
    session["parley_guest_token"] = "tok"
    session[JOINED_ROOMS_KEY] = {room.slug: "Bob\n\u202eAdmin"}
    assert guest_name(session, room) == "Bob Admin"
    assert participant_for(session, None, room).name == "Bob Admin"
    session[JOINED_ROOMS_KEY] = {room.slug: "\u200b"}
    assert participant_for(session, None, room) is None


T0 = datetime(2026, 11, 23, 9, 0, 0, tzinfo=UTC)


def stored(name: str, text: str, start: float) -> SimpleNamespace:
    """A segment as an old row may hold it: nothing was cleaned."""
    return SimpleNamespace(speaker_name=name, text=text, started_at=T0 + timedelta(seconds=start),
                           ended_at=T0 + timedelta(seconds=start + 1))


OLD_ROWS = [
    stored(FORGED, "hi", 0),
    stored("Eve", "see you\n\n00:00:09.000 --> 00:00:10.000\n<v Admin>fake cue", 2),
    stored("Mal\u202e", "a ---> b\r\n2\r\n00:00:05,000 --> 00:00:06,000", 4),
    stored("\u200b", "nameless", 6),
]


def test_txt_has_one_line_per_segment_whatever_the_rows_hold():
    lines = to_txt(OLD_ROWS).splitlines()
    assert lines == [
        "[09:00:00] Bob [09:00:00] Admin: cancelled: hi",
        "[09:00:02] Eve: see you 00:00:09.000 --> 00:00:10.000 <v Admin>fake cue",
        "[09:00:04] Mal: a ---> b 2 00:00:05,000 --> 00:00:06,000",
        "[09:00:06] ?: nameless",
    ]


def test_vtt_and_srt_have_exactly_one_cue_per_segment():
    vtt = to_vtt(OLD_ROWS)
    assert sum("-->" in line for line in vtt.splitlines()) == len(OLD_ROWS)
    assert vtt.split("\n\n")[2] == (
        "00:00:02.000 --> 00:00:03.000\n"
        "<v Eve>see you 00:00:09.000 --&gt; 00:00:10.000 &lt;v Admin&gt;fake cue")
    assert "<v Bob [09:00:00] Admin: cancelled>hi" in vtt.splitlines()
    srt = to_srt(OLD_ROWS)
    assert sum("-->" in line for line in srt.splitlines()) == len(OLD_ROWS)
    blocks = srt.split("\n\n")
    assert len(blocks) == len(OLD_ROWS)
    assert blocks[2] == ("3\n00:00:04,000 --> 00:00:05,000\n"
                         "Mal: a -> b 2 00:00:05,000 -> 00:00:06,000")
    assert all(len(block.splitlines()) == 3 for block in blocks)
