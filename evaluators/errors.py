"""The one error type for bad user input."""


class UserError(ValueError):
    """Bad user input (missing file, unknown name, bad value); the CLI prints it on one line, exit code 2."""
