from django import forms

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
    name = forms.CharField(max_length=80, strip=True)
    private = forms.BooleanField(required=False)


class JoinForm(forms.Form):
    name = forms.CharField(max_length=MAX_RAW_NAME_CHARS, strip=True, label="Display name")
    max_name_chars = MAX_GUEST_NAME_CHARS  # shown by the template

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
    username = forms.CharField(max_length=150, strip=True)
