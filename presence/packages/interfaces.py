"""The interfaces of event packages, and the registry the core looks them up in.

The core never names a package: it finds one by the Event header of a
request, and asks it what the event means (accepted types, expiry bounds, how
to validate a body, how to build the body of a NOTIFY).
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from zope.interface import Attribute, Interface

from presence.sip.message import TokenParams
from presence.storage.records import Publication, Subscription


@dataclass(frozen=True)
class ExpiryRange:
    """Expiry bounds of a request, in seconds.

    Attributes:
        default: used when the request has no Expires.
        minimum: below this (and above 0) the request gets 423.
        maximum: above this the expiry is lowered to it.
    """

    default: int
    minimum: int
    maximum: int


@dataclass(frozen=True)
class Body:
    """A NOTIFY body and its media type."""

    contentType: str
    data: bytes


class IEventPackage(Interface):
    """An event package (RFC 6665 section 7): what an Event token means."""

    name = Attribute(
        "The package's name as matched against Event headers: a token,"
        " with a parameter where the package needs one (``dialog;sla``)."
    )
    acceptTypes = Attribute("The media types PUBLISH bodies may have (list of str).")
    notifyTypes = Attribute("The media types NOTIFY bodies have (list of str).")
    acceptsPublish = Attribute("Whether PUBLISH is accepted for this event.")
    needsAuthorisation = Attribute(
        "Whether watchers go through the privacy policy (else always active)."
    )
    publishExpires = Attribute("The `ExpiryRange` of PUBLISH.")
    subscribeExpires = Attribute("The `ExpiryRange` of SUBSCRIBE.")
    watcherInfo = Attribute(
        "The name of the package that watches this one's watchers, or None."
    )
    ownerOnly = Attribute(
        "Whether only the presentity itself may subscribe (others get 403)."
    )

    def validate(body: bytes, contentType: str) -> None:
        """Check a PUBLISH body.

        The core calls it only with a ``contentType`` that is one of
        ``acceptTypes``: it answers 415 with Accept itself to a PUBLISH
        without a Content-Type or with another one, so a package checks the
        body alone.

        Raises:
            presence.sip.errors.BadRequest: the body is malformed; the reason
                says how.
        """

    def notifyBody(
        presentity: str,
        subscription: Subscription,
        publications: Sequence[Publication],
    ) -> Body | Awaitable[Body | None] | None:
        """Build the body of a NOTIFY to an active subscription.

        Args:
            presentity: the presentity URI.
            subscription: the subscription notified; packages that count
                versions read and may raise ``subscription.version``.
            publications: the live publications, oldest first (empty when
                nothing is published).

        Returns:
            The body, or ``None`` for a NOTIFY without one; or an awaitable
            of either, for packages that must read the store.
        """


#: The watcher events of RFC 3857 section 3.2 that end a subscription.
ENDING_WATCHER_EVENTS: Final = frozenset(
    {"timeout", "deactivated", "rejected", "giveup", "noresource"}
)


class IWatcherInfoPackage(IEventPackage):
    """A watcher-information package (RFC 3857): it reports another's watchers.

    A package whose ``watcherInfo`` names this one tells it, through
    `watcherChanged`, of every watcher that comes, is refreshed or goes;
    this one keeps what its own subscribers have not been sent yet, and
    `forget` drops that when one of them ends.
    """

    async def watcherChanged(
        subscription: Subscription, event: str
    ) -> list[Subscription]:
        """Record a change of one watcher for every subscriber of this package.

        Args:
            subscription: the watched package's subscription that changed.
            event: what happened, a watcher event of RFC 3857 section 3.2
                (``subscribe``, ``approved``, ``timeout``, ``deactivated``...).

        Returns:
            The subscriptions of this package to notify.
        """

    def forget(subscription: Subscription) -> None:
        """Drop what is kept for one of this package's subscriptions, now ended."""


class PackageRegistry:
    """The event packages the server serves, by name."""

    def __init__(self, packages: Sequence[IEventPackage] = ()) -> None:
        """Register ``packages``."""
        self._packages: dict[str, IEventPackage] = {}
        for package in packages:
            self.register(package)

    def register(self, package: IEventPackage) -> None:
        """Add a package; a later one with the same name replaces it."""
        self._packages[package.name] = package

    def find(self, event: TokenParams) -> IEventPackage | None:
        """The package an Event header names, or ``None``.

        A package named with a parameter (``dialog;sla``) is chosen when the
        header carries that parameter; otherwise the bare token decides.
        """
        for param in event.params:
            if param != "id":
                package = self._packages.get(f"{event.value};{param}")
                if package is not None:
                    return package
        return self._packages.get(event.value)

    def get(self, name: str) -> IEventPackage | None:
        """The package of this name, or ``None``."""
        return self._packages.get(name)

    @property
    def names(self) -> list[str]:
        """The names, in registration order."""
        return list(self._packages)

    @property
    def allowEvents(self) -> list[str]:
        """The event tokens for Allow-Events (parameters left out)."""
        out: list[str] = []
        for name in self._packages:
            token = name.split(";", 1)[0]
            if token not in out:
                out.append(token)
        return out

    def __iter__(self) -> Iterator[IEventPackage]:
        """The packages."""
        return iter(self._packages.values())
