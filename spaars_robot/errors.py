"""User-facing errors.

Anything the user can fix (a bad path, a malformed YAML, a corrupt dataset, a tampered bundle)
raises `SpaarsError`; the CLI prints its message on one line and exits 2. Everything else is a
bug and keeps its traceback.
"""


class SpaarsError(Exception):
    """An error caused by user input, with a message that says what to fix."""


class DatasetError(SpaarsError):
    """A dataset file is missing, truncated, corrupt or inconsistent."""


class ConfigError(SpaarsError):
    """A configuration file does not validate."""
