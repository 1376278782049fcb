"""Errors of the training loop that the command line reports as plain one-line messages.

The command line prints ``lmcraft: error: MESSAGE`` (exit status 2) for ``ValueError`` and
``NonFiniteLossError``; the errors below derive from ``ValueError`` so that it reports them so too.
"""


class NonFiniteLossError(RuntimeError):
    """Raised after too many consecutive steps with a NaN or infinite loss."""


class TrainingError(ValueError):
    """A run that cannot go on as asked; the message says why and what to do."""


class RunLockedError(TrainingError):
    """Another process is training into the same run directory."""


class ResumeMismatchError(TrainingError):
    """``--resume`` with options or training data other than the run started with."""


class DiskFullError(TrainingError):
    """No space left while writing a checkpoint (the previous one is left as it was)."""
