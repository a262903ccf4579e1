"""The records the store keeps: one class per table (OpenSIPS's columns).

Times are Unix seconds, as in OpenSIPS's schema. Status codes of a watcher
and a subscription: 1 active, 2 pending, 3 terminated, 4 waiting.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

from presence.status import ACTIVE

if TYPE_CHECKING:
    from presence.xcap.policy import Decision

#: A subscription's dialog, as the store indexes it: Call-ID, our tag (the To
#: tag of the SUBSCRIBE's response) and the watcher's tag.
DialogKey = tuple[str, str, str]

#: A subscription: its dialog, its event package and its Event id.
SubscriptionKey = tuple[str, str, str, str, str]

#: A publication as the ``presentity`` table's unique key names it: the user
#: part and the domain of the presentity, the event and the entity tag.
PublicationKey = tuple[str, str, str, str]

#: A watcher row: presentity URI, watcher user and domain, event.
WatcherKey = tuple[str, str, str, str]

R = TypeVar("R")


@dataclass(slots=True)
class Publication:
    """One published event state (a row of `presentity`).

    Attributes:
        presentity: the address of record, ``user@domain``.
        event: the event package name.
        etag: the entity tag that names this publication.
        expires: when it expires.
        receivedTime: when it was last published or refreshed.
        body: the published document.
        contentType: the body's media type.
        sender: the URI of the publisher's Contact, when known.
        extraHeaders: headers kept with the publication, as wire text.
    """

    presentity: str
    event: str
    etag: str
    expires: float
    receivedTime: float
    body: bytes
    contentType: str = ""
    sender: str | None = None
    extraHeaders: bytes = b""

    @property
    def username(self) -> str:
        """The user part of the presentity."""
        return self.presentity.rpartition("@")[0]

    @property
    def domain(self) -> str:
        """The domain of the presentity."""
        return self.presentity.rpartition("@")[2]

    @property
    def key(self) -> PublicationKey:
        """What names this publication, in the order of the table's key."""
        username, _, domain = self.presentity.rpartition("@")
        return (username, domain, self.event, self.etag)

    def copy(self, **changes: Any) -> Publication:
        """A copy with some fields changed."""
        if changes:
            return dataclasses.replace(self, **changes)
        return Publication(*_PUBLICATION_FIELDS(self))


@dataclass(slots=True)
class Subscription:
    """One subscription and its dialog (a row of ``active_watchers``).

    Attributes:
        presentity: the presentity URI, ``sip:user@domain``.
        event: the event package name (`presence`, ``dialog;sla``...).
        eventId: the Event header's ``id`` parameter, ``""`` when absent.
        callId: the dialog's Call-ID.
        toTag: our tag, sent in the To of the SUBSCRIBE's response and in the
            From of each NOTIFY.
        fromTag: the watcher's tag.
        watcherUsername: the user part of the watcher's From URI.
        watcherDomain: the domain of the watcher's From URI.
        toUser: the user of the SUBSCRIBE's To URI.
        toDomain: the domain of the SUBSCRIBE's To URI.
        localCSeq: the CSeq of the last NOTIFY we sent.
        remoteCSeq: the CSeq of the last SUBSCRIBE received.
        contact: the remote target (the watcher's Contact URI).
        recordRoute: the route set, as Route header text, or ``""``.
        expires: when it expires.
        status: 1 active, 2 pending, 3 terminated, 4 waiting.
        reason: why it is terminated, or ``None``.
        version: the body version for packages that count (winfo, dialog).
        socketInfo: where the SUBSCRIBE came from, ``transport:host:port``.
        localContact: the Contact we gave.
        watcherURI: the watcher's From URI as written.
        watcherDisplayName: the watcher's display name, when it gave one.
        fromHeader: the SUBSCRIBE's From header, as written.
        toHeader: the SUBSCRIBE's To header with our tag, as written.
        sharingTag: the server that owns the subscription in shared mode.
        createdTime: when the subscription was made.
    """

    presentity: str
    event: str
    eventId: str
    callId: str
    toTag: str
    fromTag: str
    watcherUsername: str
    watcherDomain: str
    toUser: str
    toDomain: str
    localCSeq: int
    remoteCSeq: int
    contact: str
    recordRoute: str
    expires: float
    status: int = ACTIVE
    reason: str | None = None
    version: int = 0
    socketInfo: str = ""
    localContact: str = ""
    watcherURI: str = ""
    watcherDisplayName: str | None = None
    fromHeader: str = ""
    toHeader: str = ""
    sharingTag: str | None = None
    createdTime: float = 0.0
    #: Runtime only, never stored: the connection the SUBSCRIBE came on.
    connection: Any = field(default=None, compare=False, repr=False)
    #: Runtime only, never stored: the privacy policy's decision (a
    #: `presence.xcap.policy.Decision`: permissions, polite block), or
    #: ``None`` when this process has not made it (a row read from the
    #: database); the notifier asks the policy again then.
    decision: Decision | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> SubscriptionKey:
        """What names this subscription."""
        return (self.callId, self.toTag, self.fromTag, self.event, self.eventId)

    @property
    def dialogKey(self) -> DialogKey:
        """What names this subscription's dialog."""
        return (self.callId, self.toTag, self.fromTag)

    @property
    def watcher(self) -> str:
        """The watcher's address of record, ``user@domain``."""
        if self.watcherUsername:
            return f"{self.watcherUsername}@{self.watcherDomain}"
        return self.watcherDomain

    def copy(self, **changes: Any) -> Subscription:
        """A copy with some fields changed.

        Stores copy records on every read and write, so the plain copy is
        made the cheap way: one C-level getter for every field, positional
        arguments to ``__init__`` (five times faster than ``replace``).
        """
        if changes:
            return dataclasses.replace(self, **changes)
        return Subscription(*_SUBSCRIPTION_FIELDS(self))


def _derivedText(
    name: str, derive: Callable[[Subscription], str]
) -> Callable[[type[Subscription]], None]:
    """Keep a text field of `Subscription` only where it differs from ``derive``.

    The field keeps its name, its place in ``__init__`` and its value as
    read: a property in front of the slot stores ``None`` when the text given
    is the one ``derive`` makes from the record's other fields (most
    subscriptions), and reading such a slot answers the derived text.  A
    value that differs (an unusual client's, or ``""`` from a row another
    server wrote) is kept as it is.
    The fields ``derive`` reads come earlier in ``__init__``, so the value
    is compared with what they are when it is set.
    """

    def install(cls: type[Subscription]) -> None:
        slot = cls.__dict__[name]

        def get(self: Subscription) -> str:
            value: str | None = slot.__get__(self, cls)
            return derive(self) if value is None else value

        def set_(self: Subscription, value: str | None) -> None:
            # None comes from `Subscription.copy`, which passes the slots as
            # they are: derived stays derived without making the text.
            if value is not None and value == derive(self):
                value = None
            slot.__set__(self, value)

        setattr(cls, name, property(get, set_, doc=f"See `Subscription`: {name}."))
        # The slot itself, for `Subscription.copy`.
        setattr(cls, "_stored_" + name, slot)

    return install


def _watcherURI(s: Subscription) -> str:
    return f"sip:{s.watcherUsername}@{s.watcherDomain}"


def _fromHeader(s: Subscription) -> str:
    if s.watcherDisplayName is None:
        return f"<{s.watcherURI}>;tag={s.fromTag}"
    return f'"{s.watcherDisplayName}" <{s.watcherURI}>;tag={s.fromTag}'


def _toHeader(s: Subscription) -> str:
    return f"<{s.presentity}>;tag={s.toTag}"


# A subscription's From, To and watcher URI are, for almost every watcher,
# what its other fields already say: 230 bytes a subscription not kept.
_derivedText("watcherURI", _watcherURI)(Subscription)
_derivedText("fromHeader", _fromHeader)(Subscription)
_derivedText("toHeader", _toHeader)(Subscription)

_PUBLICATION_FIELDS: Final = operator.attrgetter(
    *(f.name for f in dataclasses.fields(Publication))
)
_DERIVED: Final = ("watcherURI", "fromHeader", "toHeader")
# The derived fields' slots as stored (None when derived), not their text.
_SUBSCRIPTION_FIELDS: Final = operator.attrgetter(
    *(
        "_stored_" + f.name if f.name in _DERIVED else f.name
        for f in dataclasses.fields(Subscription)
    )
)


@dataclass(slots=True)
class Watcher:
    """The authorisation of one watcher for one presentity (``watchers``).

    Attributes:
        presentity: the presentity URI.
        watcherUsername: the watcher's user part.
        watcherDomain: the watcher's domain.
        event: the event package.
        status: 1 active, 2 pending, 3 terminated, 4 waiting.
        reason: the reason of a terminated status, or ``None``.
        insertedTime: when the watcher was first seen.
    """

    presentity: str
    watcherUsername: str
    watcherDomain: str
    event: str
    status: int
    reason: str | None
    insertedTime: float

    @property
    def key(self) -> WatcherKey:
        """What names this row."""
        return (self.presentity, self.watcherUsername, self.watcherDomain, self.event)


@dataclass(slots=True)
class Binding:
    """One registered contact of an address of record (``location``).

    Attributes:
        aor: the address of record, ``user@domain``.
        contact: the contact URI as registered.
        expires: when it expires.
        q: the preference, 0 to 1, or ``None``.
        callId: the Call-ID of the REGISTER that last changed it.
        cseq: that REGISTER's CSeq number.
        received: where the REGISTER came from, ``transport:host:port``.
        path: the Path headers, as text.
        userAgent: the User-Agent of the REGISTER.
        methods: the methods the contact accepts, when it said.
        params: the Contact's header parameters as written (without
            expires), for the 200 listing.
    """

    aor: str
    contact: str
    expires: float
    q: float | None
    callId: str
    cseq: int
    received: str = ""
    path: str = ""
    userAgent: str = ""
    methods: str = ""
    params: str = ""

    @property
    def username(self) -> str:
        """The user part of the address of record."""
        return self.aor.rpartition("@")[0]

    @property
    def domain(self) -> str:
        """The domain of the address of record."""
        return self.aor.rpartition("@")[2]


@dataclass
class Page(Generic[R]):
    """One page of a listing in key order (``listPublications`` and the like).

    Attributes:
        entries: the rows of the page, at most the limit asked for; fewer,
            even none, does not mean the listing is over.
        next: what to pass as ``after`` for the next page (the key of the last
            row looked at), or ``None``: there is nothing after this page.
    """

    entries: list[R]
    next: tuple[str, ...] | None


def checkPage(after: tuple[str, ...] | None, size: int, limit: int) -> None:
    """Check the arguments of a listing.

    Args:
        after: the key a page starts after, or ``None``.
        size: how many strings a key of the table has.
        limit: the most rows a page may hold.

    Raises:
        ValueError: ``after`` is not a key of ``size`` strings, or ``limit`` is
            below 1.
    """
    if after is not None and (
        len(after) != size or not all(isinstance(part, str) for part in after)
    ):
        raise ValueError(f"not a key of {size} strings: {after!r}")
    if limit < 1:
        raise ValueError("the limit must be at least 1")


@dataclass
class EventCounts:
    """How many rows of each table a store holds, by event package.

    Attributes:
        publications: event -> publications (``presentity`` rows).
        subscriptions: event -> subscriptions (``active_watchers`` rows).
        watchers: event -> ``watchers`` rows.
    """

    publications: dict[str, int] = field(default_factory=dict)
    subscriptions: dict[str, int] = field(default_factory=dict)
    watchers: dict[str, int] = field(default_factory=dict)


@dataclass
class Batch:
    """Changes written to a database in one transaction.

    Rows to insert or replace, and keys of rows to delete. A key appears in at
    most one of a table's two lists.
    """

    publications: list[Publication] = field(default_factory=list)
    publicationDeletes: list[tuple[str, str, str]] = field(default_factory=list)
    subscriptions: list[Subscription] = field(default_factory=list)
    subscriptionDeletes: list[SubscriptionKey] = field(default_factory=list)
    watchers: list[Watcher] = field(default_factory=list)
    watcherDeletes: list[tuple[str, str, str, str]] = field(default_factory=list)
    bindings: list[Binding] = field(default_factory=list)
    bindingDeletes: list[tuple[str, str]] = field(default_factory=list)

    @property
    def size(self) -> int:
        """How many rows the batch changes."""
        return (
            len(self.publications)
            + len(self.publicationDeletes)
            + len(self.subscriptions)
            + len(self.subscriptionDeletes)
            + len(self.watchers)
            + len(self.watcherDeletes)
            + len(self.bindings)
            + len(self.bindingDeletes)
        )
