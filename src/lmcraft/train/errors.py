"""Errors of the training loop that the command line reports as plain messages."""


class NonFiniteLossError(RuntimeError):
    """Raised after too many consecutive steps with a NaN or infinite loss."""
