"""Who belongs to a room and how its owners change that.

Removing a membership is announced to the room's open sockets by rooms/signals.py
(post_delete), and each socket of the removed account closes with 4403 (rooms/access.py).
"""

from __future__ import annotations

from django.db import transaction

from .models import Membership, Room


class MembershipError(Exception):
    """A change the actor may not make; the message is for them."""


class NotAnOwner(MembershipError):
    """Only the room's owners (and staff) manage its members."""


class LastOwner(MembershipError):
    """A room keeps at least one owner."""


def manages(user, room: Room) -> bool:
    """Whether `user` may see and change `room`'s members: its owners and staff."""
    if not user.is_authenticated:
        return False
    return user.is_staff or Membership.objects.filter(
        room=room, user=user, role=Membership.Role.OWNER).exists()


def members_of(room: Room) -> list[tuple[Membership, bool]]:
    """The room's memberships, owners first, then by username, each with whether it can
    be removed (all but a last owner)."""
    memberships = list(Membership.objects.filter(room=room).select_related("user")
                       .order_by("-role", "user__username"))  # "owner" sorts after "member"
    owners = sum(m.role == Membership.Role.OWNER for m in memberships)
    return [(m, m.role != Membership.Role.OWNER or owners > 1) for m in memberships]


def remove_member(room: Room, actor, user_id: int) -> Membership | None:
    """Take `user_id`'s membership of `room` away on `actor`'s behalf; the removed
    membership, or None when there was none. Raises NotAnOwner, LastOwner."""
    if not manages(actor, room):
        raise NotAnOwner("Only the room's owners can remove members.")
    with transaction.atomic():
        # Locked, so two owners removing each other at once cannot leave the room ownerless.
        owners = list(Membership.objects.select_for_update()
                      .filter(room=room, role=Membership.Role.OWNER))
        membership = Membership.objects.filter(room=room, user_id=user_id).first()
        if membership is None:
            return None
        if membership.role == Membership.Role.OWNER and len(owners) <= 1:
            raise LastOwner("A room needs an owner: the last one cannot be removed.")
        membership.delete()
    return membership
