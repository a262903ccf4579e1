"""PUBLISH (RFC 3903): entity tags, and initial, refresh, modify and remove.

Without SIP-If-Match a PUBLISH creates a publication and needs a body; with
it, the publication it names is refreshed (no body), modified (a body) or
removed (Expires: 0); an unknown entity tag gets 412. Every success issues a
new entity tag. Changes that alter what watchers see notify them.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from presence.auth.identity import Identity, requireIdentity
from presence.core.expirypolicy import ExpiryPolicy, publishExpires
from presence.core.notify import Notifier
from presence.core.subscribe import presentityOf, refuseOversized
from presence.packages.interfaces import IEventPackage, PackageRegistry
from presence.sip.errors import (
    BadEvent,
    BadRequest,
    ConditionalRequestFailed,
    SIPParseError,
    UnsupportedMediaType,
)
from presence.sip.message import SIPRequest, isToken
from presence.sip.transaction import ServerTransaction
from presence.storage.interfaces import IPresenceStore
from presence.storage.records import Publication
from presence.storage.rows import publicationRow
from presence.storage.statements import PRESENTITY


def entityTag(request: SIPRequest) -> str | None:
    """The one entity tag a PUBLISH's SIP-If-Match names, or ``None``.

    RFC 3903 section 6 step 3: "the ESC checks whether the request contains
    a single entity-tag. If not, the request is invalid, and the ESC MUST
    return with a 400 (Invalid Request) response". The grammar (section
    11.3.2) is ``SIP-If-Match = "SIP-If-Match" HCOLON entity-tag`` with
    ``entity-tag = token``: one header, one token.

    Raises:
        BadRequest: two headers, an empty value, or anything but one token.
    """
    lines = request.headerLines("sip-if-match")
    if not lines:
        return None
    if len(lines) > 1:
        raise BadRequest("more than one SIP-If-Match header")
    tag = lines[0].strip()
    if not tag:
        raise BadRequest("empty SIP-If-Match")
    if not isToken(tag):
        raise BadRequest("SIP-If-Match must hold exactly one entity-tag")
    return tag


def newETag() -> str:
    """An unguessable entity tag (RFC 3903 section 6, step 7)."""
    return secrets.token_urlsafe(12)


class PublishHandler:
    """Handles PUBLISH for every event package that accepts it."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        store: IPresenceStore,
        packages: PackageRegistry,
        notifier: Notifier,
        domains: Sequence[str] = (),
        expiry: ExpiryPolicy | None = None,
        onPublished: Callable[[str, str], Awaitable[Any]] | None = None,
    ) -> None:
        """Serve publications for ``domains`` (all when empty).

        Args:
            clock: the clock expiry times are read from.
            store: where publications are kept.
            packages: the event packages served.
            notifier: tells watchers of changes.
            domains: the domains served; every domain when empty.
            expiry: the expiry bounds of PUBLISH for each package; none:
                each package's own ``publishExpires``.
            onPublished: called with the presentity URI and the event when
                its state changed, before the watchers are notified (the
                re-authorisation of rules with a ``sphere`` condition).
        """
        self.clock = clock
        self.store = store
        self.packages = packages
        self.notifier = notifier
        self.domains = [d.lower() for d in domains]
        self.expiry = expiry or ExpiryPolicy(publishExpires, packages=packages)
        self.counts = {"initial": 0, "refresh": 0, "modify": 0, "remove": 0}
        self.onPublished = onPublished

    def package(self, request: SIPRequest) -> IEventPackage:
        """The package the Event header names, if it accepts PUBLISH.

        Raises:
            BadEvent: missing, malformed, unknown or not publishable.
        """
        try:
            event = request.event
        except SIPParseError:
            # A malformed Event names no package: 489 like an unknown one.
            event = None
        package = self.packages.find(event) if event is not None else None
        if package is None or not package.acceptsPublish:
            names: list[str] = []
            for candidate in self.packages:
                token = candidate.name.split(";", 1)[0]
                if candidate.acceptsPublish and token not in names:
                    names.append(token)
            raise BadEvent(names)
        return package

    async def __call__(
        self,
        request: SIPRequest,
        transaction: ServerTransaction,
        identity: Identity | None = None,
    ) -> None:
        """Answer a PUBLISH (RFC 3903 section 6).

        Args:
            request: the PUBLISH.
            transaction: its server transaction.
            identity: who sent it, when the request checks know: only the
                presentity itself may publish (403 for anybody else).
        """
        package = self.package(request)
        aor, _ = presentityOf(request, self.domains)
        requireIdentity(identity, aor, "publish for")
        ifMatch = entityTag(request)
        expires = self.expiry.negotiate(package, request.expires)
        body = request.body
        now = self.clock.seconds()
        if ifMatch is None:
            if expires == 0:
                # Nothing to remove without an entity tag.
                raise BadRequest("Expires 0 without SIP-If-Match")
            if not body:
                raise BadRequest("initial PUBLISH needs a body")
            contentType = self._validate(package, request)
            publication = Publication(
                presentity=aor,
                event=package.name,
                etag=newETag(),
                expires=now + expires,
                receivedTime=now,
                body=body,
                contentType=contentType,
                sender=_sender(request),
            )
            refuseOversized(PRESENTITY, publicationRow(publication))
            await self.store.putPublication(publication)
            self.counts["initial"] += 1
            self._ok(transaction, publication.etag, expires)
            await self._changed(aor, package)
            return
        existing = await self.store.publication(aor, package.name, ifMatch)
        if existing is None:
            raise ConditionalRequestFailed()
        if expires == 0:
            await self.store.removePublication(aor, package.name, ifMatch)
            self.counts["remove"] += 1
            transaction.respond(transaction.response(200, "", [("Expires", "0")]))
            await self._changed(aor, package)
            return
        modified = bool(body)
        if modified:
            existing.contentType = self._validate(package, request)
            existing.body = body
            existing.sender = _sender(request) or existing.sender
        updated = existing.copy(etag=newETag(), expires=now + expires, receivedTime=now)
        if not modified:
            # A refresh keeps the publication's place among the others.
            updated.receivedTime = existing.receivedTime
        refuseOversized(PRESENTITY, publicationRow(updated))
        await self.store.putPublication(updated, replacing=ifMatch)
        self.counts["modify" if modified else "refresh"] += 1
        self._ok(transaction, updated.etag, expires)
        if modified:
            await self._changed(aor, package)

    def _validate(self, package: IEventPackage, request: SIPRequest) -> str:
        contentType = request.contentType
        if contentType is None:
            raise UnsupportedMediaType(package.acceptTypes, "Content-Type missing")
        if contentType.value not in package.acceptTypes:
            raise UnsupportedMediaType(package.acceptTypes)
        package.validate(request.body, contentType.value)
        return contentType.value

    def _ok(self, transaction: ServerTransaction, etag: str, expires: int) -> None:
        transaction.respond(
            transaction.response(
                200,
                "",
                [("SIP-ETag", etag), ("Expires", str(expires))],
            )
        )

    async def _changed(self, aor: str, package: IEventPackage) -> None:
        if self.onPublished is not None:
            await self.onPublished(f"sip:{aor}", package.name)
        await self.notifier.presentityChanged(f"sip:{aor}", package.name)


def _sender(request: SIPRequest) -> str | None:
    try:
        contacts = request.contacts
    except SIPParseError:
        # The sender is informative only.
        return None
    return str(contacts[0].uri) if contacts else None
