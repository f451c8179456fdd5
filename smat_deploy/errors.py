"""The one exception type users see: a clear, one-line explanation of a bad input."""


class SmatError(Exception):
    """A problem with the user's input or environment, reported as one line without a traceback."""


class CheckFailed(SmatError):
    """An artifact failed a verification gate (accuracy, NaN): exit status 1, not 2 (bad input)."""
