"""Errors a user can fix. `str()` of each is the whole message shown to them:
what is wrong, where (file or field), and what to do about it."""


class DreamBoothError(ValueError):
    """A problem with the user's input or environment, not a bug."""


class ConfigError(DreamBoothError):
    """A flag, parameter or setting is invalid or conflicts with the session."""


class SessionError(DreamBoothError):
    """The session name or the session's stored state is unusable."""


class StorageError(DreamBoothError):
    """The session storage cannot be reached or written."""


class DatasetError(DreamBoothError):
    """The photos cannot be used for training."""


class ModelError(DreamBoothError):
    """The base model cannot be found, fetched or converted."""


class NetworkError(ConnectionError):
    """A transient network failure: worth retrying, unlike a DreamBoothError."""


# What a user is told in one paragraph (the CLI's `error:`), never with a traceback.
USER_ERRORS = (DreamBoothError, NetworkError)


class SessionBusyError(DreamBoothError):
    """Another run holds the session's lease: one writer per session."""


class TrainingError(DreamBoothError):
    """Training stopped producing numbers (a NaN or infinite loss or weight): the settings,
    not the code, need to change."""


class GpuMemoryError(DreamBoothError):
    """The GPU ran out of memory: a smaller plan, not a bug fix, is what helps."""


class PublishError(DreamBoothError):
    """The hub refused a publish (no token, a token without write access, a repo not the user's)."""
