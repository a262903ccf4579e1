"""Privacy policy: whether a watcher may see a presentity, and how much.

The core asks an ``IPrivacyPolicy`` for the status of each new watcher. The
``force_active`` policy allows everybody; the pres-rules policy (RFC 5025 on
RFC 4745) plugs in here. An ``IHardState`` gives the presence package a
user's hard state (RFC 4827's pidf-manipulation documents), one more source
of the document it composes.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Final

from zope.interface import Interface, implementer

from presence.status import ACTIVE
from presence.xcap.rules import (
    BOOLEAN_PERMISSIONS,
    EVERYTHING,
    Permissions,
    UserInput,
)

#: Everything is shown: what ``force_active`` gives, and what a package
#: sends untransformed (`presence.packages.presence` checks for this object
#: and skips the transformation, so that it costs nothing).
FULL_PERMISSIONS: Final = Permissions(
    services=EVERYTHING,
    persons=EVERYTHING,
    devices=EVERYTHING,
    attributes=frozenset(BOOLEAN_PERMISSIONS.values()),
    userInput=UserInput.FULL,
    allAttributes=True,
)


@dataclass(frozen=True)
class Decision:
    """What a policy decided for a watcher.

    Frozen and hashable: the same decision object is shared by every
    watcher the same rules match, and its permissions key the bodies a
    package caches.

    Attributes:
        status: 1 active, 2 pending, 3 terminated, 4 waiting.
        reason: the reason of a terminated status (``rejected``...).
        permissions: what the watcher is shown of the state (RFC 5025
            section 3.3); `FULL_PERMISSIONS` shows everything.
        politeBlock: the watcher is active but must only ever see the
            offline document (RFC 5025 section 3.2.1, ``polite-block``).
    """

    status: int
    reason: str | None = None
    permissions: Permissions = FULL_PERMISSIONS
    politeBlock: bool = False


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

    def forget(presentity: str) -> None:
        """Drop what is kept of a presentity's rules: read them again next time.

        Called when the rules are known to have changed (`reauthorise
        <presence.core.authorise.Reauthoriser.reauthorise>`).
        """


@implementer(IPrivacyPolicy)
class AllowAll:
    """``force_active``: every watcher is active, no rules are read."""

    async def authorise(
        self, presentity: str, watcherUsername: str, watcherDomain: str, event: str
    ) -> Decision:
        """Allow."""
        return ALLOW

    def forget(self, presentity: str) -> None:
        """Nothing is kept."""


@dataclass(frozen=True)
class HardState:
    """A user's hard state: the pidf-manipulation documents (RFC 4827).

    Attributes:
        tag: names this version of the documents: another tag comes with
            every change, so that it can key the bodies a package caches.
        documents: the PIDF documents, byte for byte as stored, in the
            order of their ``doc_uri``.
    """

    tag: str
    documents: tuple[bytes, ...]


class IHardState(Interface):
    """The presentities' hard state, as the presence package composes it.

    RFC 4827's abstract: "the Event State Compositor can use the
    XCAP-manipulated presence document as one of the inputs on which it
    builds the overall presence state for the presentity." What is held is
    given at once, so that a NOTIFY to thousands of watchers reads nothing;
    it changes only through `reload` (which the re-authorise operation
    calls), so what watchers were last told is what is held.
    """

    def current(presentity: str) -> HardState | Awaitable[HardState | None] | None:
        """The presentity's hard state: at once when held, else once read.

        Args:
            presentity: the presentity URI, ``sip:user@domain``.

        Returns:
            The hard state, ``None`` when the user has none.
        """

    async def reload(presentity: str) -> bool:
        """Read the presentity's hard state again.

        Returns:
            Whether it is other than what was held (a document written,
            changed or deleted).
        """
