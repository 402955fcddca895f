"""The one error type for bad user input, and how text quoted in a message is made safe to print."""


class UserError(ValueError):
    """Bad user input (missing file, unknown name, bad value); the CLI prints it on one line, exit code 2."""


def escape(value, width: int | None = 80) -> str:
    """Text from a record (or a message quoting one) with every control character written as its escape
    (a newline as backslash-n, ESC as backslash-x1b), so that it cannot split a line or drive a terminal
    (a shared folder may hold anything); cut to ``width`` characters (None: whole)."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(value))
    return text if width is None else text[:width]
