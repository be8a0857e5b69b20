"""The one exception type the command line turns into a clean message and a non-zero exit."""


class SyncTalkError(Exception):
    """A user-facing error: bad input, missing weights, a mismatched checkpoint."""
