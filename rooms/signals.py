"""Model signals that take access away from open sockets (rooms/access.py)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models.signals import post_delete, post_save

from .access import announce
from .models import Membership, Room
from .sockets import access_group, user_access_group


def room_saved(sender, instance: Room, created: bool, **kwargs) -> None:
    fields = kwargs.get("update_fields")
    if not created and not (fields and set(fields) <= {"last_seq"}):
        announce(access_group(instance.pk))


def room_deleted(sender, instance: Room, **kwargs) -> None:
    announce(access_group(instance.pk))


def membership_deleted(sender, instance: Membership, **kwargs) -> None:
    announce(access_group(instance.room_id))


def user_changed(sender, instance, **kwargs) -> None:
    fields = kwargs.get("update_fields")
    if kwargs.get("created") or (fields and set(fields) <= {"last_login"}):
        return  # a login saves the user too: nothing about access changed
    announce(user_access_group(instance.pk))


def connect() -> None:
    post_save.connect(room_saved, sender=Room, dispatch_uid="rooms.access.room_saved")
    post_delete.connect(room_deleted, sender=Room, dispatch_uid="rooms.access.room_deleted")
    post_delete.connect(membership_deleted, sender=Membership,
                        dispatch_uid="rooms.access.membership_deleted")
    user = get_user_model()
    post_save.connect(user_changed, sender=user, dispatch_uid="rooms.access.user_saved")
    post_delete.connect(user_changed, sender=user, dispatch_uid="rooms.access.user_deleted")
