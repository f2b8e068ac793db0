"""The one exception type for mistakes a user can fix (bad path, bad flag, bad checkpoint).

The CLI prints its message as a single line and exits with code 2; anything else is a bug
and keeps its traceback.
"""


class RadError(Exception):
    """A user-facing error: the message says what was wrong and what to do."""
