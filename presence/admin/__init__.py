"""The administration site: XML-RPC at ``/RPC2``, Prometheus metrics at ``/metrics``.

`adminSite` builds the twisted.web site that ``presence.tap`` listens with
on ``admin_listen``. With ``admin_password`` set, every request needs HTTP
basic authentication (a call without it, or with wrong credentials, gets
HTTP 401); without one the site has no authentication, which the
configuration allows only on a loopback address.

This package sits above the core and the storage and reads them; nothing
below it imports it (only ``presence.stack``, which builds it, and
``presence.tap``).
"""

from __future__ import annotations

import hmac
from typing import Any

from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site

from presence.admin.metrics import MetricsResource, ServerStatistics
from presence.admin.xmlrpc import (
    AdminXMLRPC,
    Reauthorise,
    RefreshDocument,
    RefreshState,
)
from presence.core.notify import Notifier
from presence.packages.interfaces import PackageRegistry
from presence.storage.interfaces import IPresenceStore

__all__ = ["AdminXMLRPC", "MetricsResource", "ServerStatistics", "adminSite"]


def adminSite(
    statistics: ServerStatistics,
    store: IPresenceStore,
    notifier: Notifier,
    packages: PackageRegistry,
    reactor: Any,
    reauthorise: Reauthorise | None = None,
    credentials: tuple[str, str] | None = None,
    refreshDocument: RefreshDocument | None = None,
    refreshState: RefreshState | None = None,
) -> Site:
    """The administration site of one server.

    Args:
        statistics: the server's counters.
        store: what the listings read.
        notifier: what ``refreshWatchers`` notifies through.
        packages: the event packages served.
        reactor: the reactor the site's connections and timeouts run on.
        reauthorise: what ``refreshWatchers`` type 0 calls, with privacy
            rules.
        credentials: the user and password every request must give (HTTP
            basic authentication); ``None``: none asked.
        refreshDocument: what ``refreshXcapDoc`` calls, in the external
            XCAP mode.
        refreshState: what ``refreshWatchers`` of a type other than 0
            calls, with pidf-manipulation.

    Returns:
        A site serving ``/RPC2`` (`AdminXMLRPC`) and ``/metrics``
        (`MetricsResource`).
    """
    root: Resource = Resource() if credentials is None else BasicAuthRoot(*credentials)
    root.putChild(
        b"RPC2",
        AdminXMLRPC(
            store,
            notifier,
            packages,
            statistics,
            reauthorise,
            refreshDocument,
            refreshState,
        ),
    )
    root.putChild(b"metrics", MetricsResource(statistics))
    return Site(root, reactor=reactor)


class _Unauthorized(Resource):
    """Answers 401 with a basic challenge."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        """Ask for credentials."""
        request.setResponseCode(401)
        request.setHeader(b"WWW-Authenticate", b'Basic realm="presence admin"')
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"authentication required\n"


class BasicAuthRoot(Resource):
    """The site's root: its children only for the right user and password.

    The comparison takes the same time whatever is wrong (``hmac.compare_digest``
    on both), so that a wrong user cannot be told from a wrong password.
    """

    def __init__(self, user: str, password: str) -> None:
        """Ask every request for ``user`` and ``password``."""
        super().__init__()
        self.user = user.encode("utf-8")
        self.password = password.encode("utf-8")

    def getChildWithDefault(self, path: bytes, request: Any) -> IResource:
        """The child, or a 401 without the right credentials."""
        user = request.getUser() or b""
        password = request.getPassword() or b""
        good = hmac.compare_digest(user, self.user) & hmac.compare_digest(
            password, self.password
        )
        if not good:
            return _Unauthorized()
        child: IResource = super().getChildWithDefault(path, request)
        return child
