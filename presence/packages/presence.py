"""The ``presence`` event package (RFC 3856), with PIDF bodies (RFC 3863).

A PUBLISH carries one PIDF document; a NOTIFY carries one document that
aggregates every live publication of the presentity: one ``<presence>``
holding the tuples, notes, persons and devices of all of them. Elements with
the same ``id`` are taken from the newest publication; extensions (RPID, the
data model's persons and devices...) are carried through untouched. PIDF
elements are written in the default namespace, never with a prefix, because
some phones read only unprefixed PIDF.

With a hard state source (``pidf_manipulation``, RFC 4827) the user's
pidf-manipulation documents are the oldest sources of the aggregate, before
every publication, as OpenSIPS aggregates them: a published element with the
same ``id`` replaces the hard state's, anything else of the hard state stays,
and with nothing published the hard state alone is the presentity's
document. Privacy transformations apply to the whole aggregate.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, ClassVar, Final

from lxml import etree
from twisted.logger import Logger
from zope.interface import implementer

from presence.packages.base import DEFAULT_EXPIRES, EventPackage
from presence.packages.interfaces import Body, ExpiryRange, IEventPackage
from presence.packages.xml import parseXML, serialise
from presence.sip.errors import BadRequest
from presence.storage.errors import StorageError
from presence.storage.records import Publication, Subscription
from presence.xcap.policy import FULL_PERMISSIONS, Decision, HardState, IHardState
from presence.xcap.rules import Permissions
from presence.xcap.transform import NotPIDF, currentSphere, newestSphere, transform

PIDF_NS: Final = "urn:ietf:params:xml:ns:pidf"
PIDF_TYPE: Final = "application/pidf+xml"
_PIDF: Final = "{" + PIDF_NS + "}"
_TUPLE: Final = _PIDF + "tuple"
_STATUS: Final = _PIDF + "status"
DM_NS: Final = "urn:ietf:params:xml:ns:pidf:data-model"
_PERSON: Final = "{" + DM_NS + "}person"
_DEVICE: Final = "{" + DM_NS + "}device"
#: What makes a hard state document say something (RFC 3863 section 4.1,
#: RFC 4479 section 3): without any of them it is no hard state at all.
_CONTENT: Final = frozenset({_PIDF + "tuple", _PIDF + "note", _PERSON, _DEVICE})
# lxml-stubs type nsmap keys as str, but None is how lxml names the default
# namespace.
_DEFAULT_NSMAP: Final[Any] = {None: PIDF_NS}

#: How many aggregated bodies are kept (the cache empties when full).
BODY_CACHE_SIZE: Final = 4096

#: What to send when nothing is published.
OFFLINE_CLOSED: Final = "closed"
OFFLINE_EMPTY: Final = "empty"


def offlineDocument(entity: str) -> bytes:
    """A PIDF with one closed tuple: OpenSIPS's body for an offline presentity."""
    root = etree.Element(_PIDF + "presence", nsmap=_DEFAULT_NSMAP)
    root.set("entity", entity)
    tuple_ = etree.SubElement(root, _PIDF + "tuple", id="offline")
    status = etree.SubElement(tuple_, _PIDF + "status")
    etree.SubElement(status, _PIDF + "basic").text = "closed"
    return serialise(root)


def _order(element: etree._Element) -> int:
    # RFC 3863 schema: tuples, then notes, then elements of other namespaces.
    if element.tag == _PIDF + "tuple":
        return 0
    if element.tag == _PIDF + "note":
        return 1
    return 2


def aggregate(
    entity: str, documents: Sequence[bytes], hard: Sequence[bytes] = ()
) -> bytes:
    """Merge PIDF documents, oldest first, into one for ``entity``.

    Children with an ``id`` replace earlier children with the same tag and
    ``id``; children without one are all kept.

    ``hard`` (the hard state, RFC 4827) comes before every document. Its
    ``<dm:person>`` elements stay only while no document has one: the data
    model has one person per presentity (RFC 4479 section 3.2: the person
    is the human or thing the presentity stands for; conflicting person
    data is the compositor's to resolve), so a person published replaces
    the hard state's whatever its ``id``, as the sphere rules read
    it (`presence.xcap.transform.currentSphere`). A published tuple or
    device replaces the hard state's only with the same ``id``: a presentity
    has many services and devices.
    """
    nsmap: dict[str | None, str] = {None: PIDF_NS}
    children: dict[object, etree._Element] = {}
    hardPersons: set[object] = set()
    publishedPerson = False
    sources = [(True, d) for d in hard] + [(False, d) for d in documents]
    for n, (isHard, document) in enumerate(sources):
        try:
            source = parseXML(document, "PIDF")
        except BadRequest:
            continue
        for prefix, uri in source.nsmap.items():
            if uri != PIDF_NS and prefix is not None and prefix not in nsmap:
                nsmap[prefix] = uri
        for i, child in enumerate(source):
            if not isinstance(child.tag, str):
                continue
            ident = child.get("id")
            key: object = (child.tag, ident) if ident is not None else (n, i)
            children.pop(key, None)
            children[key] = child
            if child.tag == _PERSON:
                if isHard:
                    hardPersons.add(key)
                else:
                    publishedPerson = True
                    hardPersons.discard(key)
    if publishedPerson:
        for key in hardPersons:
            del children[key]
    root = etree.Element(_PIDF + "presence", nsmap=nsmap)  # type: ignore[arg-type]
    root.set("entity", entity)
    for child in sorted(children.values(), key=_order):
        root.append(child)
    etree.cleanup_namespaces(root, top_nsmap=nsmap)  # type: ignore[arg-type]
    return serialise(root)


@implementer(IEventPackage)
class PresencePackage(EventPackage):
    """RFC 3856 presence with PIDF bodies."""

    log = Logger()

    name = "presence"
    acceptTypes: ClassVar[list[str]] = [PIDF_TYPE]
    notifyTypes: ClassVar[list[str]] = [PIDF_TYPE]
    watcherInfo = "presence.winfo"

    def __init__(
        self,
        offline: str = OFFLINE_CLOSED,
        publishExpires: ExpiryRange = DEFAULT_EXPIRES,
        subscribeExpires: ExpiryRange = DEFAULT_EXPIRES,
        hardState: IHardState | None = None,
    ) -> None:
        """Configure the offline body and the expiry bounds.

        Args:
            offline: ``"closed"`` for a PIDF with a closed tuple when nothing
                is published, ``"empty"`` for a NOTIFY without a body.
            publishExpires: bounds of PUBLISH expiry.
            subscribeExpires: bounds of SUBSCRIBE expiry.
            hardState: where the users' hard state (RFC 4827) is, aggregated
                before the publications; none: only what is published.
        """
        if offline not in (OFFLINE_CLOSED, OFFLINE_EMPTY):
            raise ValueError(f"offline body must be closed or empty, not {offline!r}")
        super().__init__(publishExpires, subscribeExpires)
        self.offline = offline
        self.hardState = hardState
        # The tags of hard state documents found not to be PIDF, logged once.
        self._refused: set[str] = set()
        # Whether the last read of a hard state failed (logged once).
        self._readFailing = False
        # Bodies by presentity and entity tags: every watcher of a presentity
        # gets the same document, and a new tag comes with every change, so
        # a PUBLISH to thousands of watchers aggregates once.
        self._bodies: dict[tuple[str, tuple[str, ...]], Body | None] = {}
        # What watchers with fewer permissions see, by the same key and the
        # permissions: one transformation per distinct set per change.
        self._transformed: dict[
            tuple[str, tuple[str, ...], Permissions], Body | None
        ] = {}
        #: How many documents were transformed (not taken from the cache).
        self.transformed = 0

    def validate(self, body: bytes, contentType: str) -> None:
        """Accept a well-formed PIDF document with an ``entity``."""
        root = parseXML(body, "PIDF")
        if root.tag != _PIDF + "presence":
            raise BadRequest("PIDF root must be presence in the PIDF namespace")
        if not root.get("entity"):
            raise BadRequest("PIDF presence needs an entity")
        # Plain loops over the children: lxml's find() goes through its
        # Python-level path compiler, three times the cost on every PUBLISH.
        for tuple_ in root:
            if tuple_.tag != _TUPLE:
                continue
            if not tuple_.get("id"):
                raise BadRequest("PIDF tuple needs an id")
            for child in tuple_:
                if child.tag == _STATUS:
                    break
            else:
                raise BadRequest("PIDF tuple needs a status")

    def notifyBody(
        self,
        presentity: str,
        subscription: Subscription,
        publications: Sequence[Publication],
    ) -> Body | Awaitable[Body | None] | None:
        """Aggregate the publications, or give the offline body.

        What the watcher sees is what the privacy policy decided
        (``subscription.decision``): a politely blocked watcher always gets
        the offline body, as if nothing were published (RFC 5025 section
        3.2.1); one with fewer than full permissions gets the aggregate
        through `presence.xcap.transform.transform` (RFC 5025 section 3.3),
        computed once per distinct set of permissions per change. Full
        permissions (``force_active``, or no decision) cost nothing more.
        The hard state, when there is a source of it, is the oldest
        document aggregated (held by the source: read only the first time).
        """
        decision = subscription.decision
        if decision is not None and decision.politeBlock:
            return self._offline(presentity)
        source = self.hardState
        if source is None:
            return self._compose(presentity, decision, publications, None)
        held = source.current(presentity)
        if held is None or isinstance(held, HardState):
            return self._compose(presentity, decision, publications, held)
        return self._composeLater(presentity, decision, publications, held)

    async def sphere(
        self, presentity: str, publications: Sequence[Publication]
    ) -> str | None:
        """The presentity's current sphere, for the rules' ``sphere`` conditions.

        The sphere of the newest publication that has one
        (`presence.xcap.transform.newestSphere`); the hard state's only when
        no publication has one: what a user's device says now outranks
        what the user set by XCAP, as a published element outranks the hard
        state's. ``None`` when there is none (no ``sphere`` condition holds)
        or the hard state cannot be read.
        """
        sphere = newestSphere([p.body for p in publications])
        if sphere is not None or self.hardState is None:
            return sphere
        held = self.hardState.current(presentity)
        hard = (
            held
            if held is None or isinstance(held, HardState)
            else await self._read(presentity, held)
        )
        if hard is None:
            return None
        documents = self._hardDocuments(presentity, hard)
        return (
            currentSphere(aggregate(presentity, [], documents)) if documents else None
        )

    async def _composeLater(
        self,
        presentity: str,
        decision: Decision | None,
        publications: Sequence[Publication],
        reading: Awaitable[HardState | None],
    ) -> Body | None:
        """`_compose` once the hard state is read (the first time only).

        A read that fails is composed without the hard state, so that the
        NOTIFY goes out at once all the same (RFC 6665 section 4.2.1.2:
        notifiers "MUST send a NOTIFY request immediately"); nothing is
        held, and the next NOTIFY reads again.
        """
        return self._compose(
            presentity, decision, publications, await self._read(presentity, reading)
        )

    async def _read(
        self, presentity: str, reading: Awaitable[HardState | None]
    ) -> HardState | None:
        """The hard state being read; ``None`` if the store cannot say.

        Logged once per outage: when a read fails after one succeeded.
        """
        try:
            hard = await reading
        except StorageError as e:
            if not self._readFailing:
                self._readFailing = True
                self.log.warn(
                    "the hard state of {presentity} cannot be read ({error}):"
                    " NOTIFYs are composed without it until it can",
                    presentity=presentity,
                    error=str(e),
                )
            return None
        self._readFailing = False
        return hard

    def _compose(
        self,
        presentity: str,
        decision: Decision | None,
        publications: Sequence[Publication],
        hard: HardState | None,
    ) -> Body | None:
        """The aggregate of the hard state and the publications, as seen."""
        tags = tuple(p.etag for p in publications)
        if hard is not None:
            # No entity tag of a publication has a space in it.
            tags = ("hard state " + hard.tag, *tags)
        key = (presentity, tags)
        if key in self._bodies:
            body = self._bodies[key]
        else:
            documents = [p.body for p in publications]
            hardDocuments = (
                () if hard is None else self._hardDocuments(presentity, hard)
            )
            if not documents and not hardDocuments:
                body = self._offline(presentity)
            else:
                body = Body(PIDF_TYPE, aggregate(presentity, documents, hardDocuments))
            if len(self._bodies) >= BODY_CACHE_SIZE:
                self._bodies.clear()
                self._transformed.clear()
            self._bodies[key] = body
        if decision is None or body is None:
            return body
        permissions = decision.permissions
        if permissions is FULL_PERMISSIONS or permissions == FULL_PERMISSIONS:
            return body
        return self._transform(key, body, permissions)

    def _hardDocuments(self, presentity: str, hard: HardState) -> list[bytes]:
        """The hard state documents that are PIDF; the others are logged once.

        RFC 4827 section 5: a pidf-manipulation document is a PIDF document
        (``application/pidf+xml``); anything else stored under doc_type 16
        is left out, as a PUBLISH of it would have been refused. So is a
        document with no tuple, note, person or device (``<presence
        entity="..."/>``): it says nothing, and an empty hard state must not
        take the place of the offline body.
        """
        documents: list[bytes] = []
        for document in hard.documents:
            try:
                self.validate(document, PIDF_TYPE)
                if not any(
                    child.tag in _CONTENT for child in parseXML(document, "PIDF")
                ):
                    continue
            except BadRequest as e:
                if hard.tag not in self._refused:
                    if len(self._refused) >= BODY_CACHE_SIZE:
                        self._refused.clear()
                    self._refused.add(hard.tag)
                    self.log.warn(
                        "a pidf-manipulation document of {presentity} is left"
                        " out: {reason}",
                        presentity=presentity,
                        reason=e.reason,
                    )
                continue
            documents.append(document)
        return documents

    def _offline(self, presentity: str) -> Body | None:
        if self.offline == OFFLINE_EMPTY:
            return None
        return Body(PIDF_TYPE, offlineDocument(presentity))

    def _transform(
        self, key: tuple[str, tuple[str, ...]], body: Body, permissions: Permissions
    ) -> Body | None:
        """The aggregate as a watcher with ``permissions`` sees it, cached."""
        fullKey = (*key, permissions)
        if fullKey in self._transformed:
            return self._transformed[fullKey]
        self.transformed += 1
        try:
            seen: Body | None = Body(PIDF_TYPE, transform(body.data, permissions))
        except NotPIDF:
            # Fail closed: a document that cannot be transformed is not shown.
            seen = self._offline(key[0])
        if len(self._transformed) >= BODY_CACHE_SIZE:
            self._transformed.clear()
        self._transformed[fullKey] = seen
        return seen
