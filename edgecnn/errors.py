"""Error types. The CLI turns any ``EdgecnnError`` into one line and a non-zero exit code."""

from __future__ import annotations


class EdgecnnError(Exception):
    """Base class of every error edgecnn raises on purpose.

    Attributes:
        exit_code: process exit status the CLI uses for this kind of error.
    """

    exit_code = 1


class RecipeError(EdgecnnError):
    """The recipe file or a ``--set`` override is malformed or invalid."""

    exit_code = 2


class DataError(EdgecnnError):
    """A dataset cannot be found, read or split as the recipe asks."""

    exit_code = 3


class ModelFileError(EdgecnnError):
    """A Keras or TFLite model file is missing, truncated or of the wrong kind."""

    exit_code = 4


class DeviceError(EdgecnnError):
    """A benchmark target or runtime cannot be reached or used."""

    exit_code = 5


class MissingDependencyError(EdgecnnError):
    """An optional dependency is not installed; the message names the pip extra or the package."""

    exit_code = 6


class FilesystemError(EdgecnnError):
    """An output path cannot be written (read-only, full disk, permissions, not a folder),
    or holds files edgecnn did not create and will not replace."""

    exit_code = 7
