from django import forms


class CreateRoomForm(forms.Form):
    name = forms.CharField(max_length=80, strip=True)
    private = forms.BooleanField(required=False)


class JoinForm(forms.Form):
    name = forms.CharField(max_length=40, strip=True, label="Display name")


class AddMemberForm(forms.Form):
    username = forms.CharField(max_length=150, strip=True)
