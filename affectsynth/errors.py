"""Errors with the CLI exit code each one maps to.

Exit codes (documented in README.md):
  0  success
  1  internal error (a bug: please report it)
  2  bad input: unreadable/unsupported file, bad argument or target, no usable face
  3  partial success in batch mode (some items failed; see the manifest)
"""

from __future__ import annotations


class AffectsynthError(Exception):
    """Base class of every error affectsynth raises on purpose."""

    exit_code = 1


class InputError(AffectsynthError):
    """The input (file, image, argument, target) cannot be used. Exit code 2."""

    exit_code = 2


class NoFaceError(InputError):
    """No usable face was found in the image. Exit code 2."""


class SeveralFacesError(InputError):
    """Several faces of similar size make "which face?" ambiguous. Exit code 2."""


class ModelFormatError(InputError):
    """A model file is missing, malformed or of an unsupported format version. Exit code 2."""
