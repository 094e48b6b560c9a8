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
