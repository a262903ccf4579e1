"""SUBSCRIBE (RFC 6665 sections 3 and 4): dialogs, expiry, refresh and end.

An initial SUBSCRIBE (no To tag) creates a dialog and a subscription; one
inside a dialog refreshes it, ends it (Expires: 0), or, with a new Event
id, adds another subscription to the dialog. The 200 goes out first, then
the first NOTIFY with the current state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from sys import intern
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from presence.auth.identity import Identity
from presence.core.expirypolicy import ExpiryPolicy, negotiateExpires, subscribeExpires
from presence.core.notify import Notifier, aorOf
from presence.packages.interfaces import IEventPackage, PackageRegistry
from presence.sip.errors import (
    BadEvent,
    BadRequest,
    CallOrTransactionDoesNotExist,
    Forbidden,
    NotAcceptable,
    NotFound,
    ServerInternalError,
    SIPParseError,
)
from presence.sip.message import SIPURI, SIPRequest, TokenParams, unescape
from presence.sip.transaction import ServerTransaction
from presence.sip.transport import SIPTransports
from presence.status import ACTIVE, TERMINATED
from presence.storage.interfaces import IPresenceStore
from presence.storage.limits import oversized
from presence.storage.records import Subscription
from presence.storage.rows import subscriptionRow
from presence.storage.statements import ACTIVE_WATCHERS, Table
from presence.xcap.policy import IPrivacyPolicy


def refuseOversized(table: Table, row: dict[str, object]) -> None:
    """Refuse a request whose values do not fit the columns they go to.

    Checked before anything is stored or answered, so that every backend
    behaves alike and a store that writes at once never fails after the 2xx.

    Raises:
        BadRequest: a value is longer than its column holds.
    """
    problem = oversized(table.name, row)
    if problem is not None:
        raise BadRequest(problem)


def presentityOf(request: SIPRequest, domains: Sequence[str]) -> tuple[str, SIPURI]:
    """The presentity a request is for: its Request-URI (RFC 3856 section 6).

    Returns:
        The address of record (``user@domain``, normalised per RFC 3261
        section 19.1.4) and the URI.

    Raises:
        NotFound: the domain is not served, or the URI names no user.
        BadRequest: the Request-URI is not a SIP URI.
    """
    uri = request.uri
    if not isinstance(uri, SIPURI):
        raise BadRequest("the Request-URI must be a SIP URI")
    host = uri.host.lower()
    if domains and host not in domains:
        raise NotFound("domain not served here")
    if not uri.user:
        raise NotFound("no user in the Request-URI")
    return uri.aor(), uri


def acceptable(accept: list[TokenParams], offered: Sequence[str]) -> bool:
    """Whether an Accept list admits one of the ``offered`` types."""
    if not accept:
        return True
    for item in accept:
        kind = item.value
        for offer in offered:
            if kind in (offer, "*/*") or (
                kind.endswith("/*") and offer.startswith(kind[:-1])
            ):
                return True
    return False


class SubscribeHandler:
    """Handles SUBSCRIBE for every event package."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        store: IPresenceStore,
        packages: PackageRegistry,
        policy: IPrivacyPolicy,
        notifier: Notifier,
        transports: SIPTransports,
        domains: Sequence[str] = (),
        onWatcherChange: Callable[[Subscription, str], Awaitable[Any]] | None = None,
        expiry: ExpiryPolicy | None = None,
        owner: str | None = None,
    ) -> None:
        """Serve subscriptions for ``domains`` (all when empty).

        Args:
            clock: the clock expiry times are read from.
            store: where subscriptions are kept.
            packages: the event packages served.
            policy: decides who may watch a presentity.
            notifier: sends the NOTIFYs.
            transports: give the local Contact.
            domains: the domains served; every domain when empty.
            onWatcherChange: called with a subscription and its watcher event
                (RFC 3857 section 3.2) when a watcher comes, stays or goes.
            expiry: the expiry bounds of SUBSCRIBE for each package; none:
                each package's own ``subscribeExpires``.
            owner: this server's id in a shared-mode cluster: the owner
                (``sharingTag``) of every subscription it creates or
                refreshes.
        """
        self.clock = clock
        self.store = store
        self.packages = packages
        self.policy = policy
        self.notifier = notifier
        self.transports = transports
        self.domains = [d.lower() for d in domains]
        self.created = 0
        self.refreshed = 0
        self.ended = 0
        self.refused = 0
        self.onWatcherChange = onWatcherChange
        self.expiry = expiry or ExpiryPolicy(subscribeExpires, packages=packages)
        self.owner = owner

    def package(self, request: SIPRequest) -> IEventPackage:
        """The package the Event header names.

        Raises:
            BadEvent: missing, malformed or unknown (489 with Allow-Events).
        """
        try:
            event = request.event
        except SIPParseError:
            # A malformed Event names no package: 489 like an unknown one.
            event = None
        package = self.packages.find(event) if event is not None else None
        if package is None:
            raise BadEvent(self.packages.allowEvents)
        return package

    async def __call__(
        self,
        request: SIPRequest,
        transaction: ServerTransaction,
        identity: Identity | None = None,
    ) -> None:
        """Answer a SUBSCRIBE.

        Args:
            request: the SUBSCRIBE.
            transaction: its server transaction.
            identity: who sent it, when the request checks know: then the
                watcher is the identity whatever From says, and a request in
                a dialog must come from the dialog's watcher (403).
        """
        package = self.package(request)
        event = request.event
        assert event is not None
        eventId = event.params.get("id") or ""
        try:
            accept = request.mediaTypes("accept")
        except SIPParseError:
            raise BadRequest("malformed Accept") from None
        if not acceptable(accept, package.notifyTypes):
            raise NotAcceptable(headers=[("Accept", ", ".join(package.notifyTypes))])
        expires = self.expiry.negotiate(package, request.expires)
        if request.toAddr.tag is None:
            await self._initial(
                request, transaction, package, eventId, expires, identity
            )
        else:
            await self._inDialog(
                request, transaction, package, eventId, expires, identity
            )

    def _contact(self, request: SIPRequest) -> str:
        contacts = request.contacts
        if len(contacts) != 1 or request.contactStar:
            raise BadRequest("SUBSCRIBE needs exactly one Contact")
        return str(contacts[0].uri)

    async def _initial(
        self,
        request: SIPRequest,
        transaction: ServerTransaction,
        package: IEventPackage,
        eventId: str,
        expires: int,
        identity: Identity | None = None,
    ) -> None:
        # Before the authorisation and the state are read: a fan-out begun
        # earlier skips this subscription (its first NOTIFY has that state).
        started = self.notifier.mark()
        aor, _ = presentityOf(request, self.domains)
        presentity = f"sip:{aor}"
        contact = self._contact(request)
        fromAddr = request.fromAddr
        watcherURI = fromAddr.uri
        if fromAddr.tag is None:
            raise BadRequest("From tag missing")
        watcherUser = ""
        watcherDomain = ""
        watcherAOR = None
        displayName = fromAddr.displayName
        if isinstance(watcherURI, SIPURI):
            watcherUser = unescape(watcherURI.user or "")
            watcherDomain = watcherURI.host.lower()
            watcherAOR = watcherURI.aor()
        watcherText = str(watcherURI)
        if identity is not None:
            # The watcher is who the checks say sent the request, not From.
            if identity.displayName is not None:
                displayName = identity.displayName
            elif watcherAOR != identity.aor:
                displayName = None
            watcherUser, watcherDomain = identity.user, identity.domain
            watcherAOR, watcherText = identity.aor, identity.uri
        if package.ownerOnly and watcherAOR != aor:
            # RFC 3857 section 5: only the presentity watches its watchers.
            raise Forbidden("only the presentity may subscribe")
        toURI = request.toAddr.uri
        toUser = unescape(toURI.user or "") if isinstance(toURI, SIPURI) else ""
        toDomain = toURI.host.lower() if isinstance(toURI, SIPURI) else ""
        now = self.clock.seconds()
        status, reason, decision = ACTIVE, None, None
        if package.needsAuthorisation:
            decision = await self.policy.authorise(
                presentity, watcherUser, watcherDomain, package.name
            )
            status, reason = decision.status, decision.reason
            if status == TERMINATED:
                # RFC 6665 section 4.2.1.1: a subscriber the notifier can
                # tell at once is not authorised gets 403. Rules that must
                # not reveal the refusal say polite-block (active, offline).
                self.refused += 1
                raise Forbidden("not authorised to watch this presentity")
        # The route set must parse now, or every NOTIFY would fail later.
        recordRoute = ", ".join(str(r) for r in request.addressList("record-route"))
        localContact = str(
            self.transports.contactURI(
                transaction.peer, secure=request.uriText[:5].lower() == "sips:"
            )
        )
        # Strings that many subscriptions share are interned: with tens of
        # thousands of subscriptions, one copy of each domain and local
        # contact instead of one per subscription.  The presentity, the To
        # user and where the SUBSCRIBE came from are not: most are one
        # subscription's own, and the table of interned strings grows by
        # about 50 bytes for each (the memory store shares one copy of a
        # presentity's name between its watchers).
        subscription = Subscription(
            presentity=presentity,
            event=package.name,
            eventId=eventId,
            callId=request.callId,
            toTag=transaction.toTag,
            fromTag=fromAddr.tag,
            watcherUsername=watcherUser,
            watcherDomain=intern(watcherDomain),
            toUser=toUser,
            toDomain=intern(toDomain),
            localCSeq=0,
            remoteCSeq=request.cseq.number,
            contact=contact,
            recordRoute=recordRoute,
            expires=now + expires,
            status=status,
            reason=reason,
            socketInfo=str(transaction.peer),
            localContact=intern(localContact),
            watcherURI=watcherText,
            watcherDisplayName=displayName,
            fromHeader=request.header("from") or "",
            toHeader=f"{request.header('to')};tag={transaction.toTag}",
            sharingTag=self.owner,
            createdTime=now,
            connection=transaction.peer.connection
            if transaction.peer.reliable
            else None,
        )
        subscription.decision = decision
        refuseOversized(ACTIVE_WATCHERS, subscriptionRow(subscription))
        self._respond(transaction, 200, expires=expires, contact=localContact)
        self.created += 1
        if expires == 0:
            # A fetch (RFC 6665 4.4.3): the state once, then the end.
            self.notifier.send(subscription, terminated="timeout")
            return
        self.notifier.begin(subscription.key, started)
        putWith = getattr(self.store, "putWithPublications", None)
        if putWith is not None and self.owner is not None:
            # Shared mode: the row, with the first NOTIFY's CSeq taken, and
            # that NOTIFY's state, in one round trip.
            subscription.localCSeq = 1
            publications = await putWith(subscription, aor)
            self.notifier.send(subscription, publications=publications, claimed=True)
        else:
            await self.store.putSubscription(subscription)
            self.notifier.send(subscription)
        await self._watchersChanged(subscription, "subscribe")

    async def _inDialog(
        self,
        request: SIPRequest,
        transaction: ServerTransaction,
        package: IEventPackage,
        eventId: str,
        expires: int,
        identity: Identity | None = None,
    ) -> None:
        fromTag = request.fromAddr.tag
        toTag = request.toAddr.tag
        if fromTag is None or toTag is None:
            raise CallOrTransactionDoesNotExist()
        callId = request.callId
        key = (callId, toTag, fromTag, package.name, eventId)
        subscription = await self.store.subscription(key)
        stored = subscription is not None
        if subscription is None:
            siblings = await self.store.dialogSubscriptions((callId, toTag, fromTag))
            if not siblings:
                raise CallOrTransactionDoesNotExist()
            subscription = self._newInDialog(siblings[0], package, eventId)
            await self._authoriseNew(subscription, package)
        if identity is not None:
            watcher = f"{subscription.watcherUsername}@{subscription.watcherDomain}"
            if watcher != identity.aor:
                raise Forbidden(f"the dialog's watcher is {watcher}")
        cseq = request.cseq.number
        if cseq <= subscription.remoteCSeq:
            # RFC 3261 12.2.2: a lower CSeq inside a dialog gets 500.
            raise ServerInternalError("CSeq out of order")
        subscription.remoteCSeq = cseq
        if request.hasHeader("contact"):
            subscription.contact = self._contact(request)
        if transaction.peer.reliable:
            subscription.connection = transaction.peer.connection
        now = self.clock.seconds()
        if expires == 0:
            publications = None
            removeWith = getattr(self.store, "removeWithPublications", None)
            if removeWith is not None and self.owner is not None:
                # Shared mode: the row and the final NOTIFY's state at once.
                removed, publications = await removeWith(
                    subscription.key, aorOf(subscription.presentity)
                )
            else:
                removed = await self.store.removeSubscription(subscription.key)
            if removed is not None:
                subscription.localCSeq = max(subscription.localCSeq, removed.localCSeq)
            self._respond(
                transaction, 200, expires=0, contact=subscription.localContact
            )
            if removed is None and stored:
                # Removed since it was read (its expiry, or another server):
                # whoever removed it sent its final NOTIFY, with the CSeq
                # this one would reuse.
                return
            self.ended += 1
            self.notifier.send(
                subscription, terminated="timeout", publications=publications
            )
            await self._watchersChanged(subscription, "timeout")
            return
        subscription.expires = now + expires
        if self.owner is not None:
            # The watcher talks to this server now: it sends the NOTIFYs.
            subscription.sharingTag = self.owner
        refuseOversized(ACTIVE_WATCHERS, subscriptionRow(subscription))
        await self.store.putSubscription(subscription)
        self._respond(
            transaction, 200, expires=expires, contact=subscription.localContact
        )
        self.refreshed += 1
        self.notifier.send(subscription)
        await self._watchersChanged(subscription, "subscribe")

    async def _authoriseNew(
        self, subscription: Subscription, package: IEventPackage
    ) -> None:
        """Decide a new subscription in an existing dialog, not copy its sibling's.

        Raises:
            Forbidden: the policy blocks the watcher.
        """
        subscription.status, subscription.reason = ACTIVE, None
        subscription.decision = None
        if not package.needsAuthorisation:
            return
        decision = await self.policy.authorise(
            subscription.presentity,
            subscription.watcherUsername,
            subscription.watcherDomain,
            package.name,
        )
        if decision.status == TERMINATED:
            self.refused += 1
            raise Forbidden("not authorised to watch this presentity")
        subscription.status, subscription.reason = decision.status, decision.reason
        subscription.decision = decision

    def _newInDialog(
        self, sibling: Subscription, package: IEventPackage, eventId: str
    ) -> Subscription:
        """A new subscription in an existing dialog (RFC 6665 4.5.2)."""
        return sibling.copy(
            event=package.name,
            eventId=eventId,
            version=0,
            connection=sibling.connection,
        )

    async def _watchersChanged(self, subscription: Subscription, event: str) -> None:
        """Tell the watcher tracker that a watcher came, stayed or went."""
        if self.onWatcherChange is not None:
            await self.onWatcherChange(subscription, event)

    def _respond(
        self,
        transaction: ServerTransaction,
        code: int,
        expires: int,
        contact: str,
    ) -> None:
        transaction.respond(
            transaction.response(
                code,
                "",
                [("Expires", str(expires)), ("Contact", f"<{contact}>")],
            )
        )


__all__ = [
    "SubscribeHandler",
    "acceptable",
    "negotiateExpires",
    "presentityOf",
]
