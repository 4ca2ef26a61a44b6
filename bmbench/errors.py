"""The one exception type that the CLI turns into a one-line message and exit code 2, and the warning category
that it prints as one line."""


class BmbenchError(ValueError):
    """Bad user input (a spec, a file, an option): reported in one line, exit code 2, nothing written."""


class BmbenchWarning(UserWarning):
    """A fault of the input that bmbench works around (e.g. annotations skipped, a metric not scored): the CLI
    prints each distinct message once, as one line."""
