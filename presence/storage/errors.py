"""Errors of the storage layer."""

from presence.errors import PresenceError


class StorageError(PresenceError):
    """The store cannot do what was asked.

    The database is unreachable, or refused the change. Requests that need the store
    are answered 503.
    """


class SchemaError(StorageError):
    """The database's schema is missing or of a version the server does not know.

    Retrying cannot help: the server refuses to start.
    """
