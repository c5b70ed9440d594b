"""Errors that are the user's to fix: the CLI prints them as one line and exits with status 2."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input (a name, an option, a file), reported without a traceback."""


class UnknownName(UserError):
    """A name that is not in a registry or a set of choices."""

    def __init__(self, kind: str, name: str, choices: list[str]):
        import difflib

        close = difflib.get_close_matches(name, choices, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        super().__init__(f"unknown {kind} '{name}'.{hint} Valid: {', '.join(choices)}")
        self.name = name
        self.choices = choices
