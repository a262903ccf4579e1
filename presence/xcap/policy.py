"""Privacy policy: whether a watcher may see a presentity, and how much.

The core asks an ``IPrivacyPolicy`` for the status of each new watcher. The
``force_active`` policy allows everybody; the pres-rules policy (RFC 5025 on
RFC 4745) plugs in here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zope.interface import Interface, implementer

from presence.status import ACTIVE


@dataclass(frozen=True)
class Decision:
    """What a policy decided for a watcher.

    Attributes:
        status: 1 active, 2 pending, 3 terminated, 4 waiting.
        reason: the reason of a terminated status (``rejected``...).
        transformations: what to strip from the state the watcher sees.
    """

    status: int
    reason: str | None = None
    transformations: dict[str, object] = field(default_factory=dict)


ALLOW = Decision(ACTIVE)


class IPrivacyPolicy(Interface):
    """Decides the status of a watcher of a presentity's event."""

    async def authorise(
        presentity: str, watcherUsername: str, watcherDomain: str, event: str
    ) -> Decision:
        """The decision for one watcher.

        Args:
            presentity: the presentity URI, ``sip:user@domain``.
            watcherUsername: the watcher's user part.
            watcherDomain: the watcher's domain.
            event: the event package.
        """


@implementer(IPrivacyPolicy)
class AllowAll:
    """``force_active``: every watcher is active, no rules are read."""

    async def authorise(
        self, presentity: str, watcherUsername: str, watcherDomain: str, event: str
    ) -> Decision:
        """Allow."""
        return ALLOW
