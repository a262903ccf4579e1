"""Expiry negotiation: the bounds in force for each event package, and the rule.

A package declares the expiry range of its PUBLISH and SUBSCRIBE requests
(`presence.packages.interfaces.ExpiryRange`); the server's configuration may
override any bound of it for every package (``min_expires``,
``max_expires``, ``default_expires`` and their ``_publish`` twins). An
`ExpiryPolicy` combines the two, once per package, and the handlers ask it
for the expiry to grant to each request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from presence.packages.interfaces import ExpiryRange, IEventPackage
from presence.sip.errors import IntervalTooBrief


def negotiateExpires(requested: int | None, bounds: ExpiryRange) -> int:
    """The expiry granted for a requested one (RFC 6665 4.2.1.1, RFC 3903 6).

    0 stays 0; absent takes the default; below the minimum is refused; above
    the maximum is lowered.

    Raises:
        IntervalTooBrief: between 0 and the minimum (423 with Min-Expires).
    """
    if requested is None:
        return bounds.default
    if requested == 0:
        return 0
    if requested < bounds.minimum:
        raise IntervalTooBrief(bounds.minimum)
    return min(requested, bounds.maximum)


@dataclass(frozen=True)
class ExpiryOverrides:
    """Configured expiry bounds that replace a package's own.

    A bound left ``None`` keeps the package's. The configured bounds are
    taken as given; the package's yield to them:

    - a configured minimum above the package's maximum raises that maximum
      to it, and a configured maximum below the package's minimum lowers
      that minimum to it;
    - a configured default widens the range to include it, if it lies
      outside the package's bounds that are left;
    - the package's default, kept, is clamped into the resulting range.

    `presence.config.Config.validate` makes sure that the configured bounds
    agree among themselves (minimum at most maximum, default between them).

    Attributes:
        default: the expiry used when a request has no Expires.
        minimum: the least accepted; shorter, but not 0, gets 423.
        maximum: the longest granted; longer is lowered to it.
    """

    default: int | None = None
    minimum: int | None = None
    maximum: int | None = None

    def apply(self, declared: ExpiryRange) -> ExpiryRange:
        """The range in force for a package that declares ``declared``."""
        minimum = declared.minimum if self.minimum is None else self.minimum
        maximum = declared.maximum if self.maximum is None else self.maximum
        if minimum > maximum:
            if self.minimum is None:
                minimum = maximum
            else:
                maximum = minimum
        if self.default is None:
            default = max(minimum, min(declared.default, maximum))
        else:
            default = self.default
            minimum = min(minimum, default)
            maximum = max(maximum, default)
        return ExpiryRange(default=default, minimum=minimum, maximum=maximum)


def publishExpires(package: IEventPackage) -> ExpiryRange:
    """A package's declared range for PUBLISH."""
    bounds: ExpiryRange = package.publishExpires
    return bounds


def subscribeExpires(package: IEventPackage) -> ExpiryRange:
    """A package's declared range for SUBSCRIBE."""
    bounds: ExpiryRange = package.subscribeExpires
    return bounds


class ExpiryPolicy:
    """The expiry bounds of one method, package by package, and negotiation.

    The range in force for a package is worked out the first time it is
    needed (for the packages given to the constructor, at once) and kept:
    a request costs one dictionary lookup. A package registered later gets
    its range on its first request; a package replaced under the same name
    gets a new one.
    """

    def __init__(
        self,
        declared: Callable[[IEventPackage], ExpiryRange],
        overrides: ExpiryOverrides | None = None,
        packages: Iterable[IEventPackage] = (),
    ) -> None:
        """Combine each package's declared range with the overrides.

        Args:
            declared: reads the range a package declares for this method
                (`publishExpires` or `subscribeExpires`).
            overrides: the configured bounds; none: each package's own.
            packages: the packages whose ranges are worked out now.
        """
        self.declared = declared
        self.overrides = overrides or ExpiryOverrides()
        self._bounds: dict[str, tuple[IEventPackage, ExpiryRange]] = {}
        for package in packages:
            self.bounds(package)

    def bounds(self, package: IEventPackage) -> ExpiryRange:
        """The range in force for ``package``."""
        known = self._bounds.get(package.name)
        if known is not None and known[0] is package:
            return known[1]
        bounds = self.overrides.apply(self.declared(package))
        self._bounds[package.name] = (package, bounds)
        return bounds

    def negotiate(self, package: IEventPackage, requested: int | None) -> int:
        """The expiry granted to a request for ``package`` (`negotiateExpires`).

        Raises:
            IntervalTooBrief: between 0 and the minimum (423 with Min-Expires).
        """
        return negotiateExpires(requested, self.bounds(package))


__all__ = [
    "ExpiryOverrides",
    "ExpiryPolicy",
    "negotiateExpires",
    "publishExpires",
    "subscribeExpires",
]
