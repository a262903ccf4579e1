"""The presence package (RFC 3856) with PIDF bodies (RFC 3863).

The package alone (validation, aggregation, the offline body) and through the
whole server over in-memory transports.
"""

from __future__ import annotations

from lxml import etree
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from presence.packages.interfaces import Body, ExpiryRange, IEventPackage
from presence.packages.presence import (
    BODY_CACHE_SIZE,
    PIDF_TYPE,
    PresencePackage,
    aggregate,
    offlineDocument,
)
from presence.sip.errors import BadRequest
from presence.storage.records import Publication, Subscription
from presence.testing import UA, Server, Subscriber, pidf
from test.support.cases import BobAndAliceTestCase
from test.support.records import aliceSubscription

PIDF_NS = "urn:ietf:params:xml:ns:pidf"
P = f"{{{PIDF_NS}}}"
DM_NS = "urn:ietf:params:xml:ns:pidf:data-model"
BOB = "sip:bob@example.com"


def document(children: str, entity: str = BOB, extra: str = "") -> bytes:
    """A PIDF document with these children (and namespace declarations)."""
    return (
        f'<presence xmlns="{PIDF_NS}"{extra} entity="{entity}">{children}</presence>'
    ).encode()


def tuple_(ident: str, basic: str = "open") -> str:
    """A PIDF tuple with a basic status."""
    return f'<tuple id="{ident}"><status><basic>{basic}</basic></status></tuple>'


def publication(body: bytes, etag: str = "e1") -> Publication:
    """One of bob's publications."""
    return Publication(
        presentity="bob@example.com",
        event="presence",
        etag=etag,
        expires=2_000_000,
        receivedTime=1_000_000,
        body=body,
        contentType=PIDF_TYPE,
    )


def subscription() -> Subscription:
    """Alice's subscription to bob's presence."""
    return aliceSubscription(presentity=BOB)


class ValidateTests(SynchronousTestCase):
    """What PUBLISH may carry: `PresencePackage.validate`."""

    def test_valid(self) -> None:
        """RFC 3863 4.1: tuples are optional; a presence with an entity is whole."""
        package = PresencePackage()
        package.validate(pidf(), PIDF_TYPE)
        package.validate(document(""), PIDF_TYPE)
        package.validate(document(tuple_("a") + tuple_("b", "closed")), PIDF_TYPE)

    def test_entityRequired(self) -> None:
        """RFC 3863 4.1.2: a presence without an entity gets BadRequest.

        "The <presence> element MUST have an 'entity' attribute. The value of
        the 'entity' attribute is the 'pres' URL of the presentity publishing
        this presence document."
        """
        for body in [
            document("", entity=""),
            f'<presence xmlns="{PIDF_NS}"/>'.encode(),
        ]:
            error = self.assertRaises(
                BadRequest, PresencePackage().validate, body, PIDF_TYPE
            )
            self.assertIn("entity", error.reason)

    def test_malformed(self) -> None:
        """RFC 3863 4.1: a document off the format raises BadRequest saying why.

        The root is ``presence`` in the PIDF namespace; each tuple has an
        ``id`` and a ``status``; no DTD is read.
        """
        cases = {
            b"<presence": "malformed",
            b'<presence entity="sip:bob@example.com"/>': "namespace",
            f'<tuple xmlns="{PIDF_NS}" id="a"/>'.encode(): "root",
            document("<tuple><status><basic>open</basic></status></tuple>"): "id",
            document('<tuple id="a"><note>hi</note></tuple>'): "status",
            # The status is the tuple's own child, in the PIDF namespace.
            document('<tuple id="a"><x><status/></x></tuple>'): "status",
            document('<tuple id="a"><status xmlns="urn:x"/></tuple>'): "status",
            b'<!DOCTYPE x [<!ENTITY e "e">]>' + pidf().partition(b"\n")[2]: "DTD",
        }
        for body, why in cases.items():
            error = self.assertRaises(
                BadRequest, PresencePackage().validate, body, PIDF_TYPE
            )
            self.assertIn(why, error.reason, repr(body))


class AggregateTests(SynchronousTestCase):
    """One document for a presentity from every live publication."""

    def test_newestWinsById(self) -> None:
        """RFC 3863 4.1.3: tuples merge by id, the newest publication's winning."""
        old = document(tuple_("desk", "open") + tuple_("phone", "open"))
        new = document(tuple_("desk", "closed"))
        root = etree.fromstring(aggregate(BOB, [old, new]))
        statuses = {
            t.get("id"): t.findtext(f"{P}status/{P}basic")
            for t in root.iter(P + "tuple")
        }
        self.assertEqual(statuses, {"desk": "closed", "phone": "open"})

    def test_entityIsThePresentity(self) -> None:
        """RFC 3863 4.1.2: the document's entity is the presentity's URI.

        "The value of the 'entity' attribute is the 'pres' URL of the
        presentity publishing this presence document."
        """
        body = document(tuple_("a"), entity="sip:bob@phone.example.com")
        root = etree.fromstring(aggregate(BOB, [body]))
        self.assertEqual(root.get("entity"), BOB)

    def test_withoutIdAllKept(self) -> None:
        """RFC 3863 4.1.7: notes have no id, so every publication's notes stay."""
        first = document(tuple_("a") + "<note>one</note>")
        second = document(tuple_("b") + "<note>two</note>")
        root = etree.fromstring(aggregate(BOB, [first, second]))
        self.assertEqual([n.text for n in root.iter(P + "note")], ["one", "two"])

    def test_schemaOrder(self) -> None:
        """RFC 3863 4.4: tuples, then notes, then elements of other namespaces."""
        body = document(
            f'<dm:person id="p1"/><note>hi</note>{tuple_("a")}',
            extra=f' xmlns:dm="{DM_NS}"',
        )
        root = etree.fromstring(aggregate(BOB, [body]))
        self.assertEqual(
            [child.tag for child in root],
            [P + "tuple", P + "note", f"{{{DM_NS}}}person"],
        )

    def test_defaultNamespace(self) -> None:
        """PIDF comes out unprefixed; extensions keep their prefix and namespace."""
        prefixed = (
            f'<p:presence xmlns:p="{PIDF_NS}" xmlns:dm="{DM_NS}"'
            f' entity="{BOB}"><p:tuple id="a"><p:status><p:basic>open</p:basic>'
            '</p:status></p:tuple><dm:person id="p1"/></p:presence>'
        ).encode()
        body = aggregate(BOB, [prefixed])
        self.assertIn(f'<presence xmlns="{PIDF_NS}"'.encode(), body)
        self.assertIn(b"<basic>open</basic>", body)
        self.assertNotIn(b"<p:", body)
        self.assertIn(b'<dm:person id="p1"/>', body)

    def test_malformedSkipped(self) -> None:
        """A stored document that does not parse is left out, not fatal."""
        root = etree.fromstring(aggregate(BOB, [b"<presence", document(tuple_("a"))]))
        self.assertEqual([t.get("id") for t in root.iter(P + "tuple")], ["a"])

    def test_offlineDocument(self) -> None:
        """The offline body: one closed tuple for the presentity."""
        root = etree.fromstring(offlineDocument(BOB))
        self.assertEqual((root.tag, root.get("entity")), (P + "presence", BOB))
        [tuple_] = root.iter(P + "tuple")
        self.assertEqual(tuple_.findtext(f"{P}status/{P}basic"), "closed")


class PresencePackageTests(SynchronousTestCase):
    """The package object itself."""

    def test_interface(self) -> None:
        """PresencePackage provides IEventPackage."""
        self.assertTrue(verifyObject(IEventPackage, PresencePackage()))

    def test_attributes(self) -> None:
        """RFC 3856 6.1, 6.5, 6.6: the event, PIDF, watchers by the policy.

        PUBLISH is accepted (RFC 3903), and presence.winfo (RFC 3857) watches
        its watchers.
        """
        package = PresencePackage()
        self.assertEqual(package.name, "presence")
        self.assertEqual(package.acceptTypes, [PIDF_TYPE])
        self.assertEqual(package.notifyTypes, [PIDF_TYPE])
        self.assertTrue(package.acceptsPublish)
        self.assertTrue(package.needsAuthorisation)
        self.assertFalse(package.ownerOnly)
        self.assertEqual(package.watcherInfo, "presence.winfo")
        self.assertEqual(package.publishExpires, ExpiryRange(3600, 60, 7200))
        self.assertEqual(package.subscribeExpires, ExpiryRange(3600, 60, 7200))

    def test_expiryConfigured(self) -> None:
        """The expiry bounds given are the ones the core applies."""
        publish, subscribe = ExpiryRange(600, 30, 900), ExpiryRange(60, 10, 120)
        package = PresencePackage(publishExpires=publish, subscribeExpires=subscribe)
        self.assertEqual(package.publishExpires, publish)
        self.assertEqual(package.subscribeExpires, subscribe)

    def test_offlineChoice(self) -> None:
        """The offline body is closed or empty, nothing else."""
        self.assertRaises(ValueError, PresencePackage, offline="away")

    def test_notifyNothingPublished(self) -> None:
        """Nothing published: the closed offline document, or no body."""
        body = PresencePackage().notifyBody(BOB, subscription(), [])
        assert isinstance(body, Body)
        self.assertEqual(body.contentType, PIDF_TYPE)
        self.assertEqual(body.data, offlineDocument(BOB))
        empty = PresencePackage(offline="empty")
        self.assertIsNone(empty.notifyBody(BOB, subscription(), []))

    def test_notifyBodyShared(self) -> None:
        """Watchers of one state get one body: it is aggregated once per change."""
        package = PresencePackage()
        published = [publication(pidf("open"), "e1")]
        first = package.notifyBody(BOB, subscription(), published)
        self.assertIs(package.notifyBody(BOB, subscription(), published), first)
        changed = [publication(pidf("closed"), "e2")]
        other = package.notifyBody(BOB, subscription(), changed)
        assert isinstance(other, Body)
        self.assertIsNot(other, first)
        self.assertIn(b"<basic>closed</basic>", other.data)

    def test_bodyCacheBounded(self) -> None:
        """The kept bodies are dropped when they reach ``BODY_CACHE_SIZE``."""
        package = PresencePackage()
        first = package.notifyBody(BOB, subscription(), [])
        for n in range(BODY_CACHE_SIZE):
            package.notifyBody(f"sip:user{n}@example.com", subscription(), [])
        again = package.notifyBody(BOB, subscription(), [])
        self.assertEqual(again, first)
        self.assertIsNot(again, first)


class PresenceServerTests(BobAndAliceTestCase):
    """The presence package through the whole server.

    Bob publishes; alice watches.
    """

    def test_malformedBody(self) -> None:
        """RFC 3903 6 step 3: a malformed PIDF gets 400 saying why."""
        for body in [
            b"<presence",
            b"<foo xmlns='x'/>",
            pidf().replace(b' entity="sip:bob@example.com"', b""),
        ]:
            response = self.bob.publish(body)
            self.assertEqual(response.code, 400, body)
            self.assertTrue(response.phrase)

    def test_notifyDefaultNamespace(self) -> None:
        """PIDF elements in a NOTIFY are in the default namespace, unprefixed."""
        self.bob.publish(pidf())
        notify = self.subscribed()
        self.assertIn(b"<basic>open</basic>", notify.body)
        self.assertIn(b'<presence xmlns="urn:ietf:params:xml:ns:pidf"', notify.body)

    def test_offlineEmpty(self) -> None:
        """With offline_body "empty", nothing published means no body."""
        server = Server(offlineBody="empty")
        self.addCleanup(server.close)
        alice = Subscriber(server, "alice", "192.0.2.20", 5070)
        alice.subscribe()
        [notify] = alice.notifies()
        self.assertEqual(notify.body, b"")
        self.assertIsNone(notify.header("content-type"))

    def test_twoDevicesAggregated(self) -> None:
        """RFC 3903 / RFC 3863.

        Two publications from two devices make one PIDF with both tuples.
        """
        phone = UA(self.server, "bob", "192.0.2.22", 5072)
        self.bob.publish(pidf("open", tuple="desk"))
        phone.publish(pidf("closed", tuple="mobile"))
        notify = self.subscribed()
        root = etree.fromstring(notify.body)
        ids = sorted(t.get("id") or "" for t in root.iter(f"{{{PIDF_NS}}}tuple"))
        self.assertEqual(ids, ["desk", "mobile"])
        self.assertEqual(root.get("entity"), "sip:bob@example.com")
