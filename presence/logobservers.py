"""Log observers for twistd's ``--logger`` option.

    twistd --logger presence.logobservers.jsonObserver -n presence
    twistd --logger presence.logobservers.infoObserver -n presence

``jsonObserver`` writes one JSON event per line to standard output, with the
fields of each event kept queryable. ``infoObserver`` writes text like
twistd's default but leaves out debug events, which the server emits for
every transaction.
"""

from __future__ import annotations

import sys

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    jsonFileLogObserver,
    textFileLogObserver,
)


def jsonObserver() -> ILogObserver:
    """One JSON event per line on standard output."""
    return jsonFileLogObserver(sys.stdout)


def infoObserver() -> ILogObserver:
    """Text on standard output, info level and above."""
    return FilteringLogObserver(
        textFileLogObserver(sys.stdout),
        [LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)],
    )
