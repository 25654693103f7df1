from django.apps import AppConfig


class RoomsConfig(AppConfig):
    name = "rooms"
    verbose_name = "Rooms and chat"

    def ready(self) -> None:
        from . import signals

        signals.connect()
