"""Subscription and watcher status codes, as OpenSIPS stores them.

The ``watchers`` and ``active_watchers`` tables keep a status as an integer;
these are its values, shared by the store, the core and the privacy policy
so that none of them needs another for its constants.
"""

from __future__ import annotations

from typing import Final

ACTIVE: Final = 1
PENDING: Final = 2
TERMINATED: Final = 3
WAITING: Final = 4

STATUS_NAMES: Final = {
    ACTIVE: "active",
    PENDING: "pending",
    TERMINATED: "terminated",
    WAITING: "waiting",
}
