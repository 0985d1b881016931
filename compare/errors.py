"""Errors a user can act on. The CLI prints their message as one line and exits with `exit_code`."""


class CrosscheckError(Exception):
    """Something went wrong that the user can fix; the message says what and how."""

    exit_code = 1


class UsageError(CrosscheckError):
    """A bad command-line value (argparse's convention: exit code 2)."""

    exit_code = 2


class DataError(CrosscheckError):
    """MNIST could not be fetched, verified or written."""
