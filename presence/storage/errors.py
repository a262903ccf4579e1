"""Errors of the storage layer."""

from presence.errors import PresenceError


class StorageError(PresenceError):
    """The store cannot do what was asked.

    The database is unreachable, or refused the change. Requests that need the store
    are answered 503.
    """


class RowsRejected(StorageError):
    """The database refused the data of a statement, not the statement's run.

    A value it cannot store (text that is not valid Unicode, a NUL character,
    a number out of range, a string longer than its column): sending the same
    rows again cannot help, but other rows can still be written.
    """


class SchemaError(StorageError):
    """The database's schema is missing or of a version the server does not know.

    Retrying cannot help: the server refuses to start.
    """
