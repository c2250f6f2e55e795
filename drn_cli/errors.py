"""User-facing errors.

Anything a user can cause (a bad path, a wrong checkpoint, a corrupt image) is raised as a
:class:`DrnError` whose message is one self-contained sentence. The CLI prints it on one line
and exits non-zero; Python callers can catch it. Programming errors stay ordinary exceptions.
"""

from __future__ import annotations


class DrnError(Exception):
    """An error caused by the user's input or environment, explained in one sentence."""


class WeightsError(DrnError):
    """A model file could not be found, fetched, verified or loaded."""


class InputError(DrnError):
    """An input file or folder is missing, unreadable or unusable."""


class Interrupted(DrnError):
    """Ctrl-C stopped a job after saving what lets it continue; the message says where and how."""
