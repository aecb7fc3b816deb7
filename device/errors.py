"""Error types whose message is the one line a user sees (the CLI prints it, no traceback)."""


class AffectboxError(Exception):
    """A user-facing failure; `str(err)` is a complete one-line explanation."""

    exit_code = 2


class ConfigError(AffectboxError):
    """The configuration is invalid; the message names every bad key."""


class ModelError(AffectboxError):
    """A model file is missing, truncated, or not the one its manifest describes."""


class MediaError(AffectboxError):
    """An input media file is missing, unreadable, or holds no usable frames."""


class HubError(AffectboxError):
    """The MQTT hub link cannot be set up or used: bad TLS or credential files, refused plaintext, outbox I/O."""
