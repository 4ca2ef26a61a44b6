"""The one exception type that the CLI turns into a one-line message and exit code 2."""


class BmbenchError(ValueError):
    """Bad user input (a spec, a file, an option): reported in one line, exit code 2, nothing written."""
