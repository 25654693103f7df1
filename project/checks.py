"""Parley's own system checks; `project` is an app (INSTALLED_APPS names ProjectConfig) only
so that Django registers them."""

from __future__ import annotations

from django.apps import AppConfig
from django.conf import settings
from django.core import checks

INSECURE_KEY = "parley.E001"


def development_key_in_use(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """The built-in development key is public (it is in the source): anyone could sign
    sessions and transcription keys for any room. Django's own W009 does not catch it (the key
    is long and varied), so `check --deploy` fails on it here."""
    from project.settings import DEVELOPMENT_SECRET_KEY

    keys = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    if DEVELOPMENT_SECRET_KEY not in keys:
        return []
    return [checks.Error(
        "SECRET_KEY is Parley's built-in development key, which anyone can read in the source.",
        hint="Set SECRET_KEY (the same long random value for every Parley process) and keep "
             "DEBUG=0; see docs/deployment.md.",
        id=INSECURE_KEY,
    )]


class ProjectConfig(AppConfig):
    name = "project"
    label = "parley_project"
    verbose_name = "Parley project"

    def ready(self) -> None:
        checks.register(development_key_in_use, checks.Tags.security, deploy=True)
