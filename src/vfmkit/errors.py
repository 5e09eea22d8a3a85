"""User-facing errors.

Every error a user can fix (a bad path, a wrong model id, a corrupt checkpoint, an invalid spec value) is a
:class:`VfmError`. The CLI prints its message on one line and exits with code 2, without a traceback.
"""


class VfmError(Exception):
    """An error caused by the user's input; the message says what was wrong and what was expected."""

    exit_code = 2


class ModelNotFoundError(VfmError):
    """A model id, alias, path or hub source that does not resolve."""


class WeightsError(VfmError):
    """A checkpoint that cannot be read safely or does not match the architecture."""


class DataError(VfmError):
    """An input dataset, image source or image file that is missing or malformed."""


class UnreadableFileError(DataError):
    """A data file that does not decode (missing, truncated, not an image): left out and listed where a dataset is
    read, an error where one file was asked for."""


class ImageTooSmallError(UnreadableFileError):
    """An image smaller than the transforms of a task can take (e.g. 1x1 px for a random crop): left out and listed
    like an unreadable file."""


class ConfigurationError(VfmError):
    """A combination of settings that cannot work (e.g. a neck the chosen backbone does not support); the message
    names the spec key to change."""
