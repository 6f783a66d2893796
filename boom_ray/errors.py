"""Errors a user can act on. The CLI prints their message without a traceback."""


class BoomError(Exception):
    """Base of every error whose message alone tells the user what to fix (file, row, tensor)."""
