"""The one error type the CLI reports as a single line with exit code 2."""
try:  # one class for the whole tool: the evaluators' UserError when that package is present
    from evaluators.errors import UserError
except ImportError:  # pragma: no cover
    class UserError(ValueError):
        """Bad input from the user: reported as one line on stderr, exit code 2."""
