"""The one error type for bad user input: it names the input and what was expected."""


class VinoInputError(ValueError):
    """Raised when an input (prompt, media, size, checkpoint, task file) is not what VINO expects."""


class SamplingCancelled(RuntimeError):
    """Raised between steps when the caller's cancel check asks to stop."""
