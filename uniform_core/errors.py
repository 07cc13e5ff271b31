"""Errors users see. Every bad input is reported as a UniFormError naming the input and what was expected."""


class UniFormError(Exception):
    """Base class for every error the library raises on purpose."""


class InputError(UniFormError, ValueError):
    """An argument, file or tensor given by the user does not fit what the call expects."""


class CheckpointError(UniFormError):
    """A weight file is missing, unreadable, unsafe, or does not fit the model's config."""


class Cancelled(UniFormError):
    """The caller's cancellation hook asked a long loop to stop."""
