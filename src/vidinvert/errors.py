"""The one error type users see: a single line naming the problem and the fix."""


class VidinvertError(Exception):
    """A user-facing failure. ``str(err)`` is one line: what is wrong, then what to do.

    Args:
        problem: what went wrong, e.g. ``"video not found: clip.mp4"``.
        fix: what the user should do, e.g. ``"check the path"``. Optional.
    """

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem.rstrip(". ")
        self.fix = fix.rstrip(". ") if fix else None
        message = self.problem if not self.fix else f"{self.problem}; {self.fix}"
        super().__init__(" ".join(message.split()))


class SettingsError(VidinvertError, ValueError):
    """An option out of range or of the wrong kind, refused before any model work (also a ``ValueError``)."""


class Note(UserWarning):
    """Something a user should know that is not a problem (raised with ``warnings.warn``): every front end shows it
    among its notes, not its warnings (``engine.collect_warnings``)."""
