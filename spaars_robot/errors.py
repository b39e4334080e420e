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


class SafetySpecMismatch(SpaarsError):
    """A safety spec does not fit the policy's action or observation space: refuse to start."""


class UnsafeActionError(SpaarsError):
    """The safety layer rejected an action (e.g. NaN/inf under the `reject` policy)."""


class SecurityError(SpaarsError):
    """A key file is missing or malformed, or an authentication setup is invalid."""


class BundleSignatureError(SecurityError):
    """A bundle manifest's signature is missing or does not verify against the trusted key."""


class TrainingDiverged(SpaarsError):
    """Training produced NaN/inf (losses, weights or actions); nothing non-finite is cached or summarised."""
