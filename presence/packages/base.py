"""The preamble every event package shares, written once.

`EventPackage` holds the attributes of `IEventPackage` with the values most
packages have, the expiry bounds and their defaults, and a `validate` that
refuses every body. A package sets its ``name`` and media types, overrides
the rest where it differs, writes ``notifyBody``, and, if it accepts PUBLISH,
``validate``; it declares ``@implementer(IEventPackage)`` (or an interface
that extends it) itself.
"""

from __future__ import annotations

from typing import ClassVar, Final

from presence.packages.interfaces import ExpiryRange
from presence.sip.errors import UnsupportedMediaType

#: The expiry bounds of PUBLISH and SUBSCRIBE unless configured otherwise:
#: an hour by default, a minute at the least, two hours at the most.
DEFAULT_EXPIRES: Final = ExpiryRange(3600, 60, 7200)

#: The expiry bounds of a package that accepts no PUBLISH.
NO_EXPIRES: Final = ExpiryRange(0, 0, 0)


class EventPackage:
    """A base for event packages: what `IEventPackage` asks, with defaults.

    Attributes:
        name: the Event token (with a parameter where the package needs one).
        acceptTypes: the media types of PUBLISH bodies.
        notifyTypes: the media types of NOTIFY bodies.
        acceptsPublish: whether PUBLISH is accepted; by default it is.
        needsAuthorisation: whether watchers go through the privacy policy;
            by default they do.
        watcherInfo: the name of the package watching this one's watchers;
            by default none.
        ownerOnly: whether only the presentity itself may subscribe; by
            default anybody may.
        publishExpires: the bounds of PUBLISH expiry.
        subscribeExpires: the bounds of SUBSCRIBE expiry.
    """

    name: ClassVar[str]
    acceptTypes: ClassVar[list[str]]
    notifyTypes: ClassVar[list[str]]
    acceptsPublish: ClassVar[bool] = True
    needsAuthorisation: ClassVar[bool] = True
    watcherInfo: ClassVar[str | None] = None
    ownerOnly: ClassVar[bool] = False

    def __init__(
        self,
        publishExpires: ExpiryRange = DEFAULT_EXPIRES,
        subscribeExpires: ExpiryRange = DEFAULT_EXPIRES,
    ) -> None:
        """Configure the expiry bounds.

        Args:
            publishExpires: bounds of PUBLISH expiry.
            subscribeExpires: bounds of SUBSCRIBE expiry.
        """
        self.publishExpires = publishExpires
        self.subscribeExpires = subscribeExpires

    def validate(self, body: bytes, contentType: str) -> None:
        """Refuse every body: a package that accepts PUBLISH overrides this.

        The core calls it only with a type of ``acceptTypes``, so the
        overriding method checks the body alone.

        Raises:
            presence.sip.errors.UnsupportedMediaType: always.
        """
        raise UnsupportedMediaType(self.acceptTypes)
