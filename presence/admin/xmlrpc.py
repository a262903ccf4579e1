"""The XML-RPC administration interface, at ``/RPC2``.

Methods take their arguments by position, or as one struct of named
arguments, and answer faults, never tracebacks: an unknown method is fault
8001 (Twisted's ``NOT_FOUND``), bad arguments fault 400 with a message, an
unknown presentity in ``refreshWatchers`` fault 404, a store that cannot be
read fault 503, and anything unexpected fault 8002 ``error`` (logged here
with its traceback).

The listings are paged: each answers ``{"entries": [...], "next": cursor}``,
where ``next`` is ``""`` after the last page and otherwise goes back as the
``cursor`` argument for the next page. A page holds at most ``limit``
entries (`DEFAULT_LIMIT` when not given, never more than `MAX_LIMIT`), and
may hold fewer, even none, before the end: only an empty ``next`` ends the
listing. Pages come from the store's keyset paging
(`presence.storage.interfaces.IPresenceStore.listSubscriptions` and the
like), so a page costs the same however large the server.

The names are OpenSIPS's MI commands where one exists (the README maps
them).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import warnings
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Final

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

with warnings.catch_warnings():
    # The module's client (Proxy) is built on a deprecated HTTP client; the
    # server side used here is not deprecated.
    warnings.filterwarnings("ignore", "twisted.web.http.HTTPClient", DeprecationWarning)
    from twisted.web import xmlrpc
from twisted.web import server
from twisted.web.xmlrpc import Fault

from presence.admin.metrics import ServerStatistics
from presence.core.notify import Notifier
from presence.packages.interfaces import PackageRegistry
from presence.sip.errors import SIPParseError
from presence.sip.message import SIPURI, parseURI
from presence.status import STATUS_NAMES
from presence.storage.errors import StorageError
from presence.storage.interfaces import IPresenceStore
from presence.storage.records import Publication, Subscription, Watcher

#: Decide a presentity's watchers of an event again: how many subscriptions
#: were decided, and how many of them changed status.
Reauthorise = Callable[[str, str], Coroutine[Any, Any, tuple[int, int]]]

#: Fetch one XCAP document again (its ``doc_uri`` and, when given, ``port``)
#: and re-authorise its owner's watchers: whether it changed. Raises
#: ``LookupError`` when no such document is held.
RefreshDocument = Callable[[str, int | None], Coroutine[Any, Any, bool]]

#: ``refreshWatchers`` of another type than 0, with a hard state: (presentity
#: URI, event) -> how many subscriptions were notified and how many changed
#: status (the hard state read again first; found changed, the watchers are
#: decided again).
RefreshState = Callable[[str, str], Coroutine[Any, Any, tuple[int, int]]]

#: Entries in a page when the caller gives no limit.
DEFAULT_LIMIT: Final = 1000

#: The most entries in a page; a larger limit is lowered to this.
MAX_LIMIT: Final = 1000

#: Fault codes (besides Twisted's 8001 for an unknown method and 8002 for an
#: unexpected error), after the SIP statuses they resemble.
BAD_ARGUMENTS: Final = 400
# A document type declaration, wherever it stands (and however it is cased).
_DTD_RE: Final = re.compile(rb"<!\s*(?:DOCTYPE|ENTITY)", re.IGNORECASE)
NOT_FOUND: Final = 404
UNAVAILABLE: Final = 503

#: Characters XML 1.0 cannot carry; they are replaced in every string sent.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

#: XML-RPC's ``<int>`` is 32 bits; a larger integer goes as a ``<double>``.
_INT_MAX: Final = 2**31 - 1


def _text(value: str | None) -> str:
    """A string XML can carry: ``None`` is ``""``, forbidden characters U+FFFD."""
    if not value:
        return ""
    return _NOT_XML.sub("\ufffd", value)


def _number(value: float) -> int | float:
    """An XML-RPC number: an ``<int>`` if it fits, else a ``<double>``."""
    if isinstance(value, int) and -_INT_MAX - 1 <= value <= _INT_MAX:
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) <= _INT_MAX:
        return int(value)
    return float(value)


def _status(code: int) -> str:
    return STATUS_NAMES.get(code, str(code))


def publicationEntry(publication: Publication) -> dict[str, Any]:
    """A publication as a listing entry (``pres_phtable_list``)."""
    return {
        "presentity": _text(f"sip:{publication.presentity}"),
        "event": _text(publication.event),
        "etag": _text(publication.etag),
        "expires": _number(math.ceil(publication.expires)),
        "received": _number(math.floor(publication.receivedTime)),
        "content_type": _text(publication.contentType),
        "sender": _text(publication.sender),
    }


def subscriptionEntry(subscription: Subscription) -> dict[str, Any]:
    """A subscription as a listing entry (``subs_phtable_list``)."""
    socket = subscription.socketInfo
    return {
        "presentity": _text(subscription.presentity),
        "watcher": _text(subscription.watcherURI or f"sip:{subscription.watcher}"),
        "event": _text(subscription.event),
        "event_id": _text(subscription.eventId),
        "status": _status(subscription.status),
        "reason": _text(subscription.reason),
        "expires": _number(math.ceil(subscription.expires)),
        "contact": _text(subscription.contact),
        "transport": _text(socket.partition(":")[0].upper()),
        "socket": _text(socket),
        "owner": _text(subscription.sharingTag),
        "callid": _text(subscription.callId),
        "from_tag": _text(subscription.fromTag),
        "to_tag": _text(subscription.toTag),
        "local_cseq": _number(subscription.localCSeq),
    }


def watcherEntry(watcher: Watcher) -> dict[str, Any]:
    """A row of ``watchers`` as a listing entry (``pres_watchers_list``)."""
    address = watcher.watcherDomain
    if watcher.watcherUsername:
        address = f"{watcher.watcherUsername}@{address}"
    return {
        "presentity": _text(watcher.presentity),
        "watcher": _text(f"sip:{address}"),
        "event": _text(watcher.event),
        "status": _status(watcher.status),
        "reason": _text(watcher.reason),
        "inserted": _number(math.floor(watcher.insertedTime)),
    }


# -- arguments ---------------------------------------------------------------


def arguments(method: str, args: Sequence[Any], names: Sequence[str]) -> dict[str, Any]:
    """The arguments of a call by name: given by position, or as one struct.

    Args:
        method: the method's name, for messages.
        args: what the call carried.
        names: the method's arguments, in order.

    Raises:
        Fault: 400 for too many arguments or an unknown name.
    """
    if len(args) == 1 and isinstance(args[0], dict):
        given = dict(args[0])
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise Fault(
                BAD_ARGUMENTS,
                f"{method}: unknown argument {', '.join(unknown)};"
                f" it takes {', '.join(names)}",
            )
        return given
    if len(args) > len(names):
        raise Fault(
            BAD_ARGUMENTS,
            f"{method} takes at most {len(names)} arguments"
            f" ({', '.join(names)}), not {len(args)}",
        )
    return dict(zip(names, args, strict=False))


def stringArgument(method: str, name: str, value: Any) -> str:
    """A string argument (``""`` when not given).

    Raises:
        Fault: 400 when it is not a string.
    """
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Fault(BAD_ARGUMENTS, f"{method}: {name} must be a string")
    return value.strip()


def intArgument(method: str, name: str, value: Any, default: int) -> int:
    """An integer argument, given as an int or a numeric string.

    Raises:
        Fault: 400 for anything else.
    """
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise Fault(BAD_ARGUMENTS, f"{method}: {name} must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    raise Fault(BAD_ARGUMENTS, f"{method}: {name} must be an integer, not {value!r}")


def presentityURI(method: str, text: str) -> str:
    """A presentity as the store keeps it: ``sip:user@domain``, normalised.

    ``alice@example.com`` is taken as ``sip:alice@example.com``; the domain
    is lowered as the core lowers it.

    Raises:
        Fault: 400 when it is not a SIP URI with a user.
    """
    if ":" not in text.partition("@")[0]:
        text = f"sip:{text}"
    try:
        uri = parseURI(text)
    except SIPParseError as e:
        raise Fault(BAD_ARGUMENTS, f"{method}: bad presentity {text!r}: {e}") from None
    if not isinstance(uri, SIPURI) or not uri.user:
        raise Fault(
            BAD_ARGUMENTS,
            f"{method}: the presentity must be a SIP URI with a user, not {text!r}",
        )
    return f"sip:{uri.aor()}"


def encodeCursor(kind: str, key: tuple[str, ...] | None) -> str:
    """The ``next`` of a page: the store's key, opaque to the caller."""
    if key is None:
        return ""
    data = json.dumps([kind, *key], ensure_ascii=False, separators=(",", ":"))
    return base64.urlsafe_b64encode(data.encode()).decode().rstrip("=")


def decodeCursor(method: str, kind: str, cursor: str) -> tuple[str, ...] | None:
    """The store's key in a cursor from `encodeCursor`.

    Raises:
        Fault: 400 when the cursor was not made by this listing.
    """
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        decoded = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error):
        decoded = None
    if (
        not isinstance(decoded, list)
        or len(decoded) < 2
        or decoded[0] != kind
        or not all(isinstance(part, str) for part in decoded)
    ):
        raise Fault(BAD_ARGUMENTS, f"{method}: bad cursor (give the last page's next)")
    return tuple(decoded[1:])


# -- the resource --------------------------------------------------------------


class AdminXMLRPC(xmlrpc.XMLRPC):
    """The administration methods.

    Each ``xmlrpc_`` method below is one XML-RPC method of the same name.
    """

    log = Logger()

    def __init__(
        self,
        store: IPresenceStore,
        notifier: Notifier,
        packages: PackageRegistry,
        statistics: ServerStatistics,
        reauthorise: Reauthorise | None = None,
        refreshDocument: RefreshDocument | None = None,
        refreshState: RefreshState | None = None,
    ) -> None:
        """Answer from ``store``, notify through ``notifier``.

        Args:
            store: where the listings read.
            notifier: what ``refreshWatchers`` notifies through.
            packages: the event packages served (``refreshWatchers`` checks
                the event).
            statistics: what ``get_statistics`` reads.
            reauthorise: what ``refreshWatchers`` of type 0 (the rules
                changed) calls: decide the presentity's watchers again and
                notify the changes; none (no privacy rules): type 0 re-sends
                the stored state like any other.
            refreshDocument: what ``refreshXcapDoc`` calls (the external
                XCAP mode); none: every ``refreshXcapDoc`` is fault 404.
            refreshState: what ``refreshWatchers`` of every other type calls
                when the users' hard state (pidf-manipulation) is read:
                read it again, then notify every watcher; none: those types
                re-send the state through ``notifier``.
        """
        super().__init__(allowNone=False, useDateTime=False)
        self.reauthorise = reauthorise
        self.refreshDocument = refreshDocument
        self.refreshState = refreshState
        self.store = store
        self.notifier = notifier
        self.packages = packages
        self.statistics = statistics
        xmlrpc.addIntrospection(self)

    def render_POST(self, request: Any) -> Any:
        """Refuse a call that declares a DTD or entities, then answer it.

        The XML-RPC parser behind ``/RPC2`` is the standard library's; as
        the SIP body parser does, a document type declaration (and with it
        every entity definition, the ground of entity expansion attacks) is
        refused before anything is parsed: fault 400, and the server keeps
        serving.
        """
        request.content.seek(0, 0)
        body = request.content.read()
        request.content.seek(0, 0)
        if _DTD_RE.search(body) is not None:
            request.setHeader(b"content-type", b"text/xml; charset=utf-8")
            self._cbRender(
                Fault(BAD_ARGUMENTS, "an XML-RPC call must not declare a DTD"),
                request,
            )
            return server.NOT_DONE_YET
        return super().render_POST(request)

    def _run(self, coroutine: Coroutine[Any, Any, Any]) -> Deferred[Any]:
        """Run a method's coroutine; storage errors become fault 503."""

        def unavailable(failure: Failure) -> Failure | Fault:
            if failure.check(StorageError):
                return Fault(UNAVAILABLE, f"the store is unavailable: {failure.value}")
            return failure

        return Deferred.fromCoroutine(coroutine).addErrback(unavailable)

    # -- listings ----------------------------------------------------------

    def _listing(
        self,
        method: str,
        kind: str,
        args: Sequence[Any],
        listing: Callable[..., Any],
        entry: Callable[[Any], dict[str, Any]],
        aor: bool = False,
    ) -> Deferred[Any]:
        named = arguments(method, args, ("presentity", "event", "cursor", "limit"))
        presentity = stringArgument(method, "presentity", named.get("presentity"))
        event = stringArgument(method, "event", named.get("event"))
        after = decodeCursor(
            method, kind, stringArgument(method, "cursor", named.get("cursor"))
        )
        limit = intArgument(method, "limit", named.get("limit"), DEFAULT_LIMIT)
        if limit < 1:
            raise Fault(BAD_ARGUMENTS, f"{method}: limit must be at least 1")
        uri = presentityURI(method, presentity) if presentity else None
        if uri is not None and aor:
            uri = uri.partition(":")[2]

        async def page() -> dict[str, Any]:
            result = await listing(
                presentity=uri,
                event=event or None,
                after=after,
                limit=min(limit, MAX_LIMIT),
            )
            return {
                "entries": [entry(row) for row in result.entries],
                "next": encodeCursor(kind, result.next),
            }

        return self._run(page())

    def xmlrpc_pres_phtable_list(self, *args: Any) -> Deferred[Any]:
        """pres_phtable_list([presentity, event, cursor, limit]).

        The publications (table ``presentity``), of one presentity and one
        event or all, a page at a time: {entries: [{presentity, event, etag,
        expires, received, content_type, sender}], next}.
        """
        return self._listing(
            "pres_phtable_list",
            "p",
            args,
            self.store.listPublications,
            publicationEntry,
            aor=True,
        )

    def xmlrpc_subs_phtable_list(self, *args: Any) -> Deferred[Any]:
        """subs_phtable_list([presentity, event, cursor, limit]).

        The subscriptions (table ``active_watchers``), to one presentity and
        one event or all, a page at a time: {entries: [{presentity, watcher,
        event, event_id, status, reason, expires, contact, transport, socket,
        owner, callid, from_tag, to_tag, local_cseq}], next}.
        """
        return self._listing(
            "subs_phtable_list",
            "s",
            args,
            self.store.listSubscriptions,
            subscriptionEntry,
        )

    def xmlrpc_pres_watchers_list(self, *args: Any) -> Deferred[Any]:
        """pres_watchers_list([presentity, event, cursor, limit]).

        The rows of table ``watchers``, of one presentity and one event or
        all, a page at a time: {entries: [{presentity, watcher, event,
        status, reason, inserted}], next}.
        """
        return self._listing(
            "pres_watchers_list",
            "w",
            args,
            self.store.listWatchers,
            watcherEntry,
        )

    # -- statistics --------------------------------------------------------

    def xmlrpc_get_statistics(self, *args: Any) -> Deferred[Any]:
        """get_statistics([name, ...]).

        The server's counters as {"group:name": value}. Without arguments, or
        with "all", every one; otherwise those named, a name ending with a
        colon ("notify:") standing for its group. The arguments may also come
        as one array.
        """
        names: list[str] = []
        for arg in args:
            for name in arg if isinstance(arg, list) else [arg]:
                if not isinstance(name, str):
                    raise Fault(BAD_ARGUMENTS, "get_statistics: names must be strings")
                names.append(name.strip())

        async def statistics() -> dict[str, Any]:
            snapshot = await self.statistics.snapshot()
            values = snapshot.flat()
            if names and "all" not in names:
                values = {
                    key: value
                    for key, value in values.items()
                    if any(
                        key == name or (name.endswith(":") and key.startswith(name))
                        for name in names
                    )
                }
            return {_text(key): _number(value) for key, value in values.items()}

        return self._run(statistics())

    # -- NOTIFYs -----------------------------------------------------------

    def xmlrpc_refreshWatchers(self, *args: Any) -> Deferred[Any]:
        """refreshWatchers(presentity, event[, type]).

        OpenSIPS's type 0 means "the authorisation rules changed": with
        privacy rules (the integrated XCAP mode) the presentity's watchers
        are decided again, and those whose status or view changed are
        notified (and the winfo watchers). Any other type, or type 0 without
        rules, sends every active or pending watcher a NOTIFY with the
        state stored now (with pidf-manipulation, the user's hard state read
        again from XCAP first). Answers {presentity, event, type, subscriptions,
        changed}: how many subscriptions the presentity has for the event,
        and how many changed status (0 for a plain re-send; with
        pidf-manipulation, type 1 after a change of the hard state counts the
        changes its re-decision made).
        """
        method = "refreshWatchers"
        named = arguments(method, args, ("presentity", "event", "type"))
        presentity = stringArgument(method, "presentity", named.get("presentity"))
        event = stringArgument(method, "event", named.get("event"))
        kind = intArgument(method, "type", named.get("type"), 0)
        if not presentity:
            raise Fault(NOT_FOUND, f"{method}: the presentity URI is empty")
        if not event:
            raise Fault(BAD_ARGUMENTS, f"{method}: the event is empty")
        if self.packages.get(event) is None:
            raise Fault(
                BAD_ARGUMENTS,
                f"{method}: unknown event package {event!r}; served:"
                f" {', '.join(self.packages.allowEvents)}",
            )
        uri = presentityURI(method, presentity)

        async def refresh() -> dict[str, Any]:
            changed = 0
            if kind == 0 and self.reauthorise is not None:
                notified, changed = await self.reauthorise(uri, event)
            elif kind != 0 and self.refreshState is not None:
                notified, changed = await self.refreshState(uri, event)
            else:
                notified = await self.notifier.presentityChanged(uri, event)
            self.log.info(
                "refreshWatchers {presentity} {event} type {type}:"
                " {count} subscriptions",
                presentity=uri,
                event=event,
                type=kind,
                count=notified,
            )
            return {
                "presentity": _text(uri),
                "event": _text(event),
                "type": _number(kind),
                "subscriptions": _number(notified),
                "changed": _number(changed),
            }

        return self._run(refresh())

    #: OpenSIPS's MI spelling of the same method.
    xmlrpc_refresh_watchers = xmlrpc_refreshWatchers

    def xmlrpc_refreshXcapDoc(self, *args: Any) -> Deferred[Any]:
        """refreshXcapDoc(doc_uri[, port]).

        OpenSIPS's: in the external XCAP mode, fetch the document stored
        with this ``doc_uri`` (the full URL) again at once, and re-authorise
        its owner's watchers. ``port`` is checked against the stored one
        only when given. Answers {doc_uri, changed}; fault 404 when no such
        document is held (or not in the external mode).
        """
        method = "refreshXcapDoc"
        named = arguments(method, args, ("doc_uri", "port"))
        docURI = stringArgument(method, "doc_uri", named.get("doc_uri"))
        port = intArgument(method, "port", named.get("port"), -1)
        if not docURI:
            raise Fault(BAD_ARGUMENTS, f"{method}: the doc_uri is empty")
        refresh = self.refreshDocument
        if refresh is None:
            raise Fault(NOT_FOUND, f"{method}: no XCAP server is configured")

        async def refreshed() -> dict[str, Any]:
            try:
                changed = await refresh(docURI, None if port < 0 else port)
            except LookupError as e:
                raise Fault(NOT_FOUND, f"{method}: {e}") from None
            self.log.info(
                "refreshXcapDoc {uri}: {what}",
                uri=docURI,
                what="changed" if changed else "unchanged",
            )
            return {"doc_uri": _text(docURI), "changed": _number(int(changed))}

        return self._run(refreshed())
