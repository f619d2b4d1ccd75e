"""Django's `manage.py changepassword`, through `user_password_set`: the new password ends
every session of the user, audited as the command's.

Django's command saves the password itself; this one keeps its prompts (twice, checked
by the validators, three tries) and finds the user by email as logins do (any case).
`accounts` comes before `django.contrib.auth` in INSTALLED_APPS so that this one is found.
"""

from __future__ import annotations

import getpass
from typing import Any

from django.contrib.auth.management.commands import changepassword
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from accounts.models import User, normalize_email
from accounts.services import user_password_set
from core.caller import Caller

TRIES = 3


class Command(changepassword.Command):
    help = "Change a user's password; every session of theirs ends (sockets close with 4409)."

    def handle(self, *args: Any, **options: Any) -> str:
        email = normalize_email(options["username"] or getpass.getuser())
        user = User.objects.using(options["database"]).filter(email=email).first()
        if user is None:
            raise CommandError(f"user '{email}' does not exist")
        self.stdout.write(f"Changing password for user '{user}'")
        for _ in range(TRIES):
            password = self._get_pass()
            if password != self._get_pass("Password (again): "):
                self.stdout.write("Passwords do not match. Please try again.")
                continue
            try:
                validate_password(password, user)
            except ValidationError as error:
                self.stderr.write("\n".join(error.messages))
                continue
            ended = user_password_set(user=user, password=password, caller=Caller.command())
            return f"Password changed successfully for user '{user}'; ended {ended} session(s)."
        raise CommandError(f"Aborting password change for user '{user}' after {TRIES} attempts")
