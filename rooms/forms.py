from django import forms
from django.contrib.auth import get_user_model

from .identity import (
    MAX_GUEST_NAME_CHARS,
    DisplayNameError,
    clean_display_name,
    is_account_name,
)

# What the join form reads at all: room for a name padded with characters that cleaning
# removes, and still a bound on the work (and the error page) a bot can cause.
MAX_RAW_NAME_CHARS = 200


class CreateRoomForm(forms.Form):
    name = forms.CharField(max_length=80, strip=True, label="Room name")
    private = forms.BooleanField(required=False, label="Private (members with an account only)",
                                 label_suffix="")


class JoinForm(forms.Form):
    name = forms.CharField(
        max_length=MAX_RAW_NAME_CHARS, strip=True, label="Display name",
        help_text=f"Up to {MAX_GUEST_NAME_CHARS} characters, as others will see you; "
                  "names of accounts here are theirs.")
    max_name_chars = MAX_GUEST_NAME_CHARS

    def clean_name(self) -> str:
        try:
            name = clean_display_name(self.cleaned_data["name"], max_chars=MAX_GUEST_NAME_CHARS)
        except DisplayNameError as error:
            raise forms.ValidationError(str(error), code="invalid_name") from error
        # Refused rather than marked "(guest)": a mark would have to be drawn by every place a
        # name appears (chat, presence, captions, transcripts, exports, other clients), and
        # one that forgets it lets the guest pass as the account; refusing keeps every
        # account's name its own wherever it is shown.
        if is_account_name(name):
            raise forms.ValidationError(
                "That name belongs to an account here: log in to use it, or choose another.",
                code="account_name")
        return name


class AddMemberForm(forms.Form):
    username = forms.CharField(max_length=150, strip=True, label="Add a member by username")

    def clean_username(self):
        """The account with that username (cleaned_data["username"] is the user)."""
        user = get_user_model().objects.filter(username=self.cleaned_data["username"]).first()
        if user is None:
            raise forms.ValidationError("No account has that username.", code="no_account")
        return user
