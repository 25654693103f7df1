"""Signing up: Django's UserCreationForm, then logged in and sent on to where they were going.

Logging in and out are Django's own views (django.contrib.auth.urls)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.forms import UserCreationForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render, resolve_url
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods

from .ratelimit import WindowLimit, client_address

HOUR = 3600
# Accounts one address may create an hour. Every account's name is closed to guests
# (rooms/identity.py is_account_name), so unbounded sign-ups would let one client take
# every common name; ten an hour is more than a household or an office signs up.
SIGNUPS_PER_HOUR_PER_ADDRESS = 10


def next_url(request: HttpRequest) -> str:
    """The same-site `next` of the request (form field, else query), else the lobby."""
    target = request.POST.get("next") or request.GET.get("next", "")
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                       require_https=request.is_secure()):
        return target
    return resolve_url(settings.LOGIN_REDIRECT_URL)


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """GET: the sign-up form. POST: create the account, log it in, go to `next`."""
    form = UserCreationForm(request.POST or None)
    wait = None
    if form.is_valid():
        wait = WindowLimit("accounts.signup", SIGNUPS_PER_HOUR_PER_ADDRESS, HOUR).hit(
            client_address(request))
        if wait is None:
            login(request, form.save())
            return redirect(next_url(request))
        form.add_error(None, "Too many accounts were created from here in the last hour: "
                             "try again later.")
    status = 200 if request.method == "GET" else 429 if wait is not None else 400
    page = render(request, "registration/signup.html",
                  {"form": form, "next": next_url(request)}, status=status)
    if wait is not None:
        page["Retry-After"] = str(int(wait))
    return page
