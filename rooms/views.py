"""Lobby, room pages and the guest join form: plain Django views with CSRF."""

from __future__ import annotations

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.templatetags.static import static
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from . import members, services
from .forms import AddMemberForm, CreateRoomForm, JoinForm
from .identity import Participant, join_as_guest, participant_for
from .models import Membership, Room
from .presence import presence_store
from .ratelimit import WindowLimit, client_address

# Rooms per lobby page: a screenful, and one presence lookup of that many rooms.
LOBBY_PAGE_SIZE = 50
HOUR = 3600


def visible_rooms(user):
    rooms = Room.objects.all()
    if user.is_authenticated and user.is_staff:
        return rooms
    if user.is_authenticated:
        return rooms.filter(Q(is_private=False) | Q(memberships__user=user)).distinct()
    return rooms.filter(is_private=False)


@require_GET
def lobby(request: HttpRequest, form: CreateRoomForm | None = None, status: int = 200):
    """The visible rooms, LOBBY_PAGE_SIZE at a time (`?page=`), with who is in each."""
    rooms = visible_rooms(request.user).order_by("name", "pk")
    page = Paginator(rooms, LOBBY_PAGE_SIZE).get_page(request.GET.get("page"))
    shown = list(page.object_list)
    present = async_to_sync(presence_store().members_of)([r.pk for r in shown])
    # "N here" counts people; an assistant in the room (presence kind "assistant", #15) is
    # mentioned, not counted.
    listing = []
    for room in shown:
        everyone = present.get(room.pk, [])
        people = [p for p in everyone if p.kind != "assistant"]
        listing.append((room, people, len(people) < len(everyone)))
    return render(
        request, "rooms/lobby.html",
        {"listing": listing, "page": page, "form": form or CreateRoomForm()}, status=status,
    )


def _room_creation_refused(request: HttpRequest) -> float | None:
    """Seconds to wait when this session (or account) or this address has created its
    hourly share of rooms, else None (and the creation is counted). The session is asked
    first, so one person's refused attempts do not use up the address's share."""
    limits = settings.PARLEY  # ROOM_CREATE_PER_HOUR(_PER_ADDRESS), why: project/settings.py
    if request.user.is_authenticated:
        who = f"u:{request.user.pk}"
    else:
        # No session yet (a client without cookies): the address limit is the one that holds.
        who = f"s:{request.session.session_key}" if request.session.session_key else None
    if who is not None:
        wait = WindowLimit("rooms.session", limits["ROOM_CREATE_PER_HOUR"], HOUR).hit(who)
        if wait is not None:
            return wait
    return WindowLimit("rooms.address", limits["ROOM_CREATE_PER_HOUR_PER_ADDRESS"], HOUR).hit(
        client_address(request))


@require_POST
def create_room(request: HttpRequest):
    form = CreateRoomForm(request.POST)
    if form.is_valid() and form.cleaned_data["private"] and not request.user.is_authenticated:
        form.add_error("private", "Log in to create a private room.")
    if not form.is_valid():
        request.method = "GET"
        return lobby(request, form=form, status=400)
    wait = _room_creation_refused(request)
    if wait is not None:
        minutes = max(1, round(wait / 60))
        form.add_error(None, f"You have created too many rooms for now: try again in about "
                             f"{minutes} minute{'s' if minutes != 1 else ''}.")
        request.method = "GET"
        refusal = lobby(request, form=form, status=429)
        refusal["Retry-After"] = str(int(wait))
        return refusal
    creator = request.user if request.user.is_authenticated else None
    room = services.create_room(
        form.cleaned_data["name"], private=form.cleaned_data["private"], creator=creator
    )
    return redirect(room)


def enter_room(request: HttpRequest, slug: str) -> tuple[Room, Participant | None, HttpResponse]:
    """The room and the visitor's participant in it, or the page to show instead: 404,
    a 403 that asks guests of a private room to log in or sign up (and come back), a 403
    for non-members, the join form for a guest without a name.
    Every page of a room (chat, calls, captions) starts here."""
    room = get_object_or_404(Room, slug=slug)
    participant = participant_for(request.session, request.user, room)
    if participant is not None:
        return room, participant, None
    if room.is_private:
        if not request.user.is_authenticated:
            return room, None, render(request, "rooms/needs_account.html",
                                      {"room": room, "next": request.path}, status=403)
        return room, None, render(request, "rooms/forbidden.html", {"room": room}, status=403)
    page = render(request, "rooms/join.html", {"room": room, "form": JoinForm()})
    return room, None, page


@require_GET
def room(request: HttpRequest, slug: str, add_member_form: AddMemberForm | None = None,
         status: int = 200):
    room, participant, refusal = enter_room(request, slug)
    if refusal is not None:
        return refusal
    is_owner = members.manages(request.user, room)
    manages = room.is_private and is_owner
    return render(request, "rooms/room.html", {
        "room": room,
        "participant": participant,
        "is_owner": is_owner,
        "invite_url": request.build_absolute_uri(room.get_absolute_url()),
        "members": members.members_of(room) if manages else None,
        "add_member_form": (add_member_form or AddMemberForm()) if manages else None,
    }, status=status)


@require_POST
def join_room(request: HttpRequest, slug: str):
    room = get_object_or_404(Room, slug=slug)
    if room.is_private:
        raise PermissionDenied("Private rooms are for members with an account: log in.")
    form = JoinForm(request.POST)
    if not form.is_valid():  # e.g. a name that shows nothing, or an account's name
        # The page the visitor came from stays the destination: the re-rendered form's own
        # path is the join URL, which only takes POSTs (a retried join ended on a 405).
        return render(request, "rooms/join.html", {
            "room": room, "form": form, "next": _safe_next(request) or room.get_absolute_url(),
        }, status=400)
    join_as_guest(request.session, room, form.cleaned_data["name"])
    return redirect(_safe_next(request) or room.get_absolute_url())


@require_POST
def add_member(request: HttpRequest, slug: str):
    """The owner of a private room (or staff) admits another account by username."""
    target = get_object_or_404(Room, slug=slug)
    if not members.manages(request.user, target):
        raise PermissionDenied("Only the room's owners can add members.")
    form = AddMemberForm(request.POST)
    if not form.is_valid():  # the error shows beside the field, on the room page
        request.method = "GET"
        return room(request, slug, add_member_form=form, status=400)
    member = form.cleaned_data["username"]
    Membership.objects.get_or_create(room=target, user=member)
    messages.success(request, f"{member.get_username()} can now enter this room.")
    return redirect(target)


@require_POST
def remove_member(request: HttpRequest, slug: str, user_id: int):
    """An owner (or staff) takes a member out of the room; their open sockets close."""
    room = get_object_or_404(Room, slug=slug)
    try:
        removed = members.remove_member(room, request.user, user_id)
    except members.NotAnOwner as refusal:
        raise PermissionDenied(str(refusal)) from refusal
    except members.LastOwner as refusal:
        messages.error(request, str(refusal))
        return redirect(room)
    if removed is None:
        messages.error(request, "That account is not a member of this room.")
    elif removed.user_id == request.user.pk and not request.user.is_staff:
        messages.success(request, f"You have left {room.name}.")
        return redirect("lobby")
    else:
        messages.success(request, f"{removed.user.get_username()} can no longer enter.")
    return redirect(room)


def _safe_next(request: HttpRequest) -> str | None:
    """A same-room `next` path (the join form of a call page returns there)."""
    target = request.POST.get("next", "")
    prefix = reverse("room", args=[request.resolver_match.kwargs["slug"]])
    return target if target.startswith(prefix) and "//" not in target else None


def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")


@require_GET
def favicon(request: HttpRequest) -> HttpResponse:
    """Browsers ask for /favicon.ico whatever a page links: send them to the SVG (not
    permanently: its hashed name changes with its content)."""
    return redirect(static("parley/favicon.svg"))
