"""The counters of the server's limits: `LimitStatistics`.

One object is built in ``presence/stack.py`` and handed to every object
enforcing a limit: the transports (``max_tcp_connections``,
``tcp_read_timeout``), the source rate limit, and the subscription and
publication limits of the core. Each counts, in a plain int, what it refused,
for the admin interface to read. It lives in the SIP package, below the core,
so that the transports can count into it without knowing of the server.
"""

from __future__ import annotations


class LimitStatistics:
    """What the limits refused, one counter each.

    Attributes:
        rateLimited: requests answered 503 because their source sent more
            than ``source_rate_limit`` per second.
        rateDropped: requests dropped unanswered because their source sent
            more than four times ``source_rate_limit`` per second.
        subscriptionsRefused: initial SUBSCRIBEs answered 403 because their
            watcher already had ``max_subscriptions_per_watcher``.
        publicationsRefused: initial PUBLISHes answered 403 because their
            presentity already had ``max_publications_per_presentity``.
        connectionsRefused: TCP connections closed on arrival because
            ``max_tcp_connections`` were open.
        readTimeouts: TCP connections closed because an incomplete message
            waited longer than ``tcp_read_timeout``.
    """

    def __init__(self) -> None:
        """Start every counter at zero."""
        self.rateLimited = 0
        self.rateDropped = 0
        self.subscriptionsRefused = 0
        self.publicationsRefused = 0
        self.connectionsRefused = 0
        self.readTimeouts = 0

    def asDict(self) -> dict[str, int]:
        """Every counter by name."""
        return dict(vars(self))
