"""The one exception type that reaches the user as a one-line error with exit status 2."""

from __future__ import annotations


class TalkgenError(Exception):
    """Bad input the user can fix: printed as one line, exit status 2, nothing written."""

    exit_code = 2

    def one_line(self) -> str:
        return " ".join(str(self).split())
