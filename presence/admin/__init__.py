"""The administration site: XML-RPC at ``/RPC2``, Prometheus metrics at ``/metrics``.

`adminSite` builds the twisted.web site that ``presence.tap`` listens with
on ``admin_listen``. The site has no authentication: keep it on a loopback
or otherwise private address.

This package sits above the core and the storage and reads them; nothing
below it imports it (only ``presence.stack``, which builds it, and
``presence.tap``).
"""

from __future__ import annotations

from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Site

from presence.admin.metrics import MetricsResource, ServerStatistics
from presence.admin.xmlrpc import AdminXMLRPC, Reauthorise, RefreshDocument
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
    refreshDocument: RefreshDocument | None = None,
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
        refreshDocument: what ``refreshXcapDoc`` calls, in the external
            XCAP mode.

    Returns:
        A site serving ``/RPC2`` (`AdminXMLRPC`) and ``/metrics``
        (`MetricsResource`).
    """
    root = Resource()
    root.putChild(
        b"RPC2",
        AdminXMLRPC(
            store, notifier, packages, statistics, reauthorise, refreshDocument
        ),
    )
    root.putChild(b"metrics", MetricsResource(statistics))
    return Site(root, reactor=reactor)
