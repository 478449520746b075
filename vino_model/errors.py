"""The one error type for bad user input: it names the input and what was expected."""

import sys


class VinoInputError(ValueError):
    """Raised when an input (prompt, media, size, checkpoint, task file) is not what VINO expects."""


class SamplingCancelled(RuntimeError):
    """Raised between steps when the caller's cancel check asks to stop."""


def run_cli(command) -> int:
    """Run a command-line entry point: bad input prints one line and exits 2, never a stack trace."""
    try:
        command()
    except VinoInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
