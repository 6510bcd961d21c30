"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class EvalbotError(Exception):
    """A problem with the user's input or environment, worded for the user (no traceback)."""
