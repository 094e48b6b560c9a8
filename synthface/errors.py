"""User-facing errors.

Anything a user can cause (a bad config, a missing model file, an unreadable
input) raises a :class:`SynthfaceError` subclass with one clear message. The CLI
turns it into that message on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations


class SynthfaceError(Exception):
    """An error the user can fix; its message is shown as is."""

    exit_code = 2


class ConfigError(SynthfaceError):
    """A config file or ``--set`` override is invalid; the message names the key."""


class InputDataError(SynthfaceError):
    """An input file (bank, gallery, images, shards) is missing or malformed."""


class MissingModelError(SynthfaceError):
    """A model file or folder is missing; the message names it and how to get it."""


class RunStateError(SynthfaceError):
    """An output folder holds a run that conflicts with the one requested."""


class ModelIntegrityError(SynthfaceError):
    """A model file differs from what its folder's synthface-models.json records (or from a known-good hash)."""


class UnusableModelError(MissingModelError, InputDataError):
    """A model file exists but cannot serve: it is not a readable ONNX graph (truncated, corrupt)
    or not the kind of model asked for (a detector given as the recognizer). One class for the
    face stage and the benchmark alike; it is both a missing model (get a good copy) and a
    malformed input file, so code that catches either kind sees it."""


class OutputError(SynthfaceError):
    """The output location cannot be opened or written (bad URL, not a folder, no permission,
    missing fsspec backend). Raised in the driver, it ends the run with one message.

    ``fatal_reason`` is set when no retry can fix it (the disk is full, the output is
    read-only or refuses our credentials): the run then fails its remaining jobs at once.
    """

    def __init__(self, message: str, fatal_reason: str | None = None):
        super().__init__(message)
        self.fatal_reason = fatal_reason


class WorkerStartError(SynthfaceError):
    """A worker process died while loading its stages (before any job ran)."""


class UnsafePickleError(InputDataError):
    """A verification ``.bin`` references a global that such a file never needs (refused unrun)."""
