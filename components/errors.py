"""Errors that are the user's to fix: the CLI prints them in one line, without a traceback."""


class RecloopError(Exception):
    """A problem with input data, parameters or the environment, explained in its message."""
