"""The presence core end to end over in-memory transports.

PUBLISH (RFC 3903), SUBSCRIBE and NOTIFY (RFC 6665), the presence package (RFC 3856),
REGISTER.
"""

from __future__ import annotations

from lxml import etree

from presence.core.dispatcher import SERVER
from presence.sip.message import SIPRequest, SIPResponse
from presence.testing import UA, Server, Subscriber, pidf
from test.support.cases import BobAndAliceTestCase

PIDF_NS = "urn:ietf:params:xml:ns:pidf"


def basics(notify: SIPRequest) -> list[str]:
    """The basic statuses in a NOTIFY's PIDF body."""
    root = etree.fromstring(notify.body)
    return [e.text or "" for e in root.iter(f"{{{PIDF_NS}}}basic")]


class CoreTestCase(BobAndAliceTestCase):
    """A server, a publisher (bob) and a watcher (alice)."""


class PublishTests(CoreTestCase):
    """PUBLISH, RFC 3903 section 6."""

    def test_initial(self) -> None:
        """RFC 3903 6 step 7-8.

        An initial PUBLISH gets 200 with a fresh SIP-ETag and the granted
        Expires.
        """
        response = self.bob.publish(pidf())
        self.assertEqual(response.code, 200)
        etag = response.header("sip-etag")
        self.assertTrue(etag and len(etag) >= 16)
        self.assertEqual(response.header("expires"), "3600")

    def test_missingEvent(self) -> None:
        """RFC 3903 6 step 2: a PUBLISH without Event gets 489 with Allow-Events."""
        self.bob.send(self.bob.request("PUBLISH", self.bob.aor, [], pidf()))
        response = self.bob.response()
        self.assertEqual(response.code, 489)
        self.assertIn("presence", response.header("allow-events") or "")

    def test_unknownEvent(self) -> None:
        """RFC 3903 6 step 2: an unknown event package gets 489."""
        response = self.bob.publish(pidf(), event="no-such-event")
        self.assertEqual(response.code, 489)

    def test_tooBrief(self) -> None:
        """RFC 3903 6 step 5: an Expires below the minimum gets 423 with Min-Expires."""
        response = self.bob.publish(pidf(), expires=10)
        self.assertEqual(response.code, 423)
        self.assertEqual(response.header("min-expires"), "60")

    def test_tooLongLowered(self) -> None:
        """RFC 3903 6 step 5: an Expires above the maximum is lowered."""
        response = self.bob.publish(pidf(), expires=999999)
        self.assertEqual((response.code, response.header("expires")), (200, "7200"))

    def test_initialNeedsBody(self) -> None:
        """RFC 3903 6 step 6: an initial PUBLISH without a body gets 400."""
        response = self.bob.publish(None)
        self.assertEqual(response.code, 400)

    def test_wrongType(self) -> None:
        """RFC 3903 6 step 3: an unsupported Content-Type gets 415 with Accept."""
        response = self.bob.publish(b"hello", contentType="text/plain")
        self.assertEqual(response.code, 415)
        self.assertEqual(response.header("accept"), "application/pidf+xml")

    def test_wrongTypeRefusedByCore(self) -> None:
        """RFC 3903 6 step 5: the core answers 415 before a package sees the body.

        "If the content type of the request does not match the event
        package, or is not understood by the ESC, the ESC MUST reject the
        request with an appropriate response, such as 415 (Unsupported Media
        Type), and skip the remainder of the steps." For every package that
        accepts PUBLISH, a body of another type or without a Content-Type
        gets 415 with the package's types in Accept, and the package's
        ``validate`` is never called.
        """
        validated: list[str] = []
        for package in self.server.stack.packages:
            if not package.acceptsPublish:
                continue

            def validate(
                body: bytes, contentType: str, name: str = package.name
            ) -> None:
                validated.append(name)

            self.patch(package, "validate", validate)
            for contentType in ("text/plain", None):
                response = self.bob.publish(
                    b"<x/>", event=package.name, contentType=contentType
                )
                self.assertEqual(response.code, 415, (package.name, contentType))
                self.assertEqual(
                    response.header("accept"), ", ".join(package.acceptTypes)
                )
        self.assertEqual(validated, [])
        self.assertEqual(self.bob.publish(pidf()).code, 200)
        self.assertEqual(validated, ["presence"])

    def test_refresh(self) -> None:
        """RFC 3903 6 step 4.

        SIP-If-Match without a body refreshes and gets a new entity tag; the old
        one is then unknown (412).
        """
        etag = self.bob.publish(pidf()).header("sip-etag")
        response = self.bob.publish(None, etag=etag)
        self.assertEqual(response.code, 200)
        newTag = response.header("sip-etag")
        self.assertNotEqual(newTag, etag)
        self.assertEqual(self.bob.publish(None, etag=etag).code, 412)
        self.assertEqual(self.bob.publish(None, etag=newTag).code, 200)

    def test_refreshWithContentTypeNoBody(self) -> None:
        """A refresh that carries a Content-Type but an empty body is a refresh."""
        etag = self.bob.publish(pidf()).header("sip-etag")
        response = self.bob.publish(b"", etag=etag)
        self.assertEqual(response.code, 200)

    def test_unknownETag(self) -> None:
        """RFC 3903 6 step 4: an unknown SIP-If-Match gets 412, never 500."""
        self.assertEqual(self.bob.publish(None, etag="nope").code, 412)
        self.assertEqual(self.bob.publish(pidf(), etag="nope").code, 412)
        self.assertEqual(self.bob.publish(None, etag="nope", expires=0).code, 412)

    def test_remove(self) -> None:
        """RFC 3903 6 step 4: Expires 0 with SIP-If-Match removes the publication."""
        etag = self.bob.publish(pidf()).header("sip-etag")
        response = self.bob.publish(None, etag=etag, expires=0)
        self.assertEqual((response.code, response.header("expires")), (200, "0"))
        self.assertEqual(self.bob.publish(None, etag=etag).code, 412)

    def test_udpWithoutContentLength(self) -> None:
        """RFC 3261 18.3: a UDP PUBLISH without Content-Length has the rest as body."""
        data = self.bob.request(
            "PUBLISH",
            self.bob.aor,
            [("Event", "presence"), ("Content-Type", "application/pidf+xml")],
            pidf(),
            contentLength=False,
        )
        self.bob.send(data)
        self.assertEqual(self.bob.response().code, 200)

    def test_domainNotServed(self) -> None:
        """A PUBLISH for a domain the server does not serve gets 404."""
        server = Server(domains=("example.org",))
        self.addCleanup(server.close)
        ua = UA(server, "bob", "192.0.2.21", 5071)
        self.assertEqual(ua.publish(pidf()).code, 404)


class SubscribeTests(CoreTestCase):
    """SUBSCRIBE and NOTIFY, RFC 6665 sections 3 and 4."""

    def test_initialSubscribe(self) -> None:
        """RFC 6665 4.2.1.1.

        A new subscription gets 200 with a To tag, the granted Expires and a
        Contact, then a NOTIFY with the current state.
        """
        response = self.alice.subscribe(expires=600)
        self.assertEqual(response.code, 200)
        self.assertIsNotNone(response.toAddr.tag)
        self.assertEqual(response.header("expires"), "600")
        self.assertTrue(response.contacts)
        [notify] = self.alice.notifies()
        self.assertEqual(notify.method, "NOTIFY")
        self.assertEqual(notify.uriText, "sip:alice@192.0.2.20:5070")
        self.assertEqual(notify.header("event"), "presence")
        self.assertEqual(notify.header("subscription-state"), "active;expires=600")
        self.assertEqual(notify.header("content-type"), "application/pidf+xml")
        self.assertEqual(notify.fromAddr.tag, response.toAddr.tag)
        self.assertEqual(notify.toAddr.tag, self.alice.tag)
        self.assertEqual(notify.callId, self.alice.callId)
        self.assertTrue(notify.contacts)
        self.assertEqual(basics(notify), ["closed"])

    def test_publishNotifies(self) -> None:
        """A PUBLISH, a modify and a removal each notify the watcher."""
        self.subscribed()
        etag = self.bob.publish(pidf("open")).header("sip-etag")
        [notify] = self.alice.notifies()
        self.assertEqual(basics(notify), ["open"])
        self.alice.answer(notify)
        etag = self.bob.publish(pidf("closed", note="away"), etag=etag).header(
            "sip-etag"
        )
        [notify] = self.alice.notifies()
        self.assertIn(b"away", notify.body)
        self.alice.answer(notify)
        etag = self.bob.publish(None, etag=etag).header("sip-etag")
        self.assertEqual(self.alice.notifies(), [], "a refresh changes nothing")
        self.assertEqual(self.bob.publish(None, etag=etag, expires=0).code, 200)
        [notify] = self.alice.notifies()
        self.assertEqual(basics(notify), ["closed"])

    def test_refresh(self) -> None:
        """RFC 6665 4.2.1.2.

        A SUBSCRIBE in the dialog refreshes it and a NOTIFY follows.
        """
        self.subscribed()
        response = self.alice.subscribe(expires=1200, refresh=True)
        self.assertEqual((response.code, response.header("expires")), (200, "1200"))
        [notify] = self.alice.notifies()
        self.assertEqual(notify.header("subscription-state"), "active;expires=1200")

    def test_unsubscribe(self) -> None:
        """RFC 6665 4.2.1.4.

        Expires 0 ends the subscription with a NOTIFY terminated;reason=timeout.
        """
        self.subscribed()
        response = self.alice.subscribe(expires=0, refresh=True)
        self.assertEqual(response.code, 200)
        [notify] = self.alice.notifies()
        self.assertEqual(
            notify.header("subscription-state"), "terminated;reason=timeout"
        )
        self.alice.answer(notify)
        self.bob.publish(pidf())
        self.assertEqual(self.alice.notifies(), [])

    def test_unknownDialog(self) -> None:
        """RFC 3261 12.2.2: a SUBSCRIBE for an unknown dialog gets 481."""
        self.alice.callId = "nope"
        self.alice.toTag = "nope"
        self.alice.presentity = "sip:bob@example.com"
        response = self.alice.subscribe(refresh=True)
        self.assertEqual(response.code, 481)

    def test_tooBrief(self) -> None:
        """RFC 6665 4.2.1.1: an Expires below the minimum gets 423 with Min-Expires."""
        response = self.alice.subscribe(expires=5)
        self.assertEqual((response.code, response.header("min-expires")), (423, "60"))

    def test_tooLongLowered(self) -> None:
        """RFC 6665 4.2.1.1: the notifier may shorten the expiry."""
        response = self.alice.subscribe(expires=100000)
        self.assertEqual(response.header("expires"), "7200")

    def test_defaultExpires(self) -> None:
        """RFC 6665 4.2.1.1: without Expires the package default applies."""
        response = self.alice.subscribe(expires=None)
        self.assertEqual(response.header("expires"), "3600")

    def test_notAcceptable(self) -> None:
        """RFC 6665 4.2.1.1: an Accept without the package's type gets 406."""
        response = self.alice.subscribe(accept="text/plain")
        self.assertEqual(response.code, 406)
        ok = self.alice.subscribe(accept="application/*, text/plain")
        self.assertEqual(ok.code, 200)

    def test_badEvent(self) -> None:
        """RFC 6665 4.2.1.1: an unknown package gets 489 with Allow-Events."""
        response = self.alice.subscribe(event="foo")
        self.assertEqual(response.code, 489)
        self.assertIn("presence", response.header("allow-events") or "")

    def test_eventIdsKeptApart(self) -> None:
        """RFC 6665 4.2.1 / 8.2.1: Event ids keep subscriptions apart in one dialog."""
        self.subscribed(event="presence;id=1")
        response = self.alice.subscribe(event="presence;id=2", refresh=True)
        self.assertEqual(response.code, 200)
        [notify] = self.alice.notifies()
        self.assertEqual(notify.header("event"), "presence;id=2")
        self.alice.answer(notify)
        self.bob.publish(pidf())
        # One NOTIFY outstanding per dialog (they share its CSeq; RFC 3261
        # 12.2.2: "the request is out of order and MUST be rejected with a
        # 500"): the second follows the answer to the first.
        [first] = self.alice.notifies()
        self.alice.answer(first)
        [second] = self.alice.notifies()
        self.assertGreater(second.cseq.number, first.cseq.number)
        events = sorted([first.header("event") or "", second.header("event") or ""])
        self.assertEqual(events, ["presence;id=1", "presence;id=2"])

    def test_mergedRequest(self) -> None:
        """RFC 3261 8.2.2.2: the same SUBSCRIBE by two paths gets 482 on the second."""
        headers = [("Event", "presence"), ("Expires", "600")]
        data = self.alice.request(
            "SUBSCRIBE",
            "sip:bob@example.com",
            headers,
            callId="m1",
            cseq=1,
            branch="z9hG4bK-m-a",
        )
        self.alice.send(data)
        self.assertEqual(self.alice.response().code, 200)
        self.alice.send(data.replace(b"z9hG4bK-m-a", b"z9hG4bK-m-b"))
        self.assertEqual(self.alice.response().code, 482)

    def test_subscriptionExpires(self) -> None:
        """RFC 6665 4.1.3 / 4.2.2.

        An expired subscription gets a final NOTIFY terminated;reason=timeout.
        """
        self.subscribed(expires=60)
        self.server.advance(61)
        [notify] = [n for n in self.alice.notifies() if n.method == "NOTIFY"]
        self.assertEqual(
            notify.header("subscription-state"), "terminated;reason=timeout"
        )
        self.assertEqual(self.server.store.counts()["subscriptions"], 0)

    def test_publicationExpires(self) -> None:
        """RFC 3903 section 5.

        An unrefreshed publication expires and watchers are notified.
        """
        self.subscribed(expires=3600)
        self.bob.publish(pidf(), expires=60)
        [notify] = self.alice.notifies()
        self.alice.answer(notify)
        self.assertEqual(basics(notify), ["open"])
        self.server.advance(61)
        [notify] = self.alice.notifies()
        self.assertEqual(basics(notify), ["closed"])
        self.assertEqual(self.server.store.counts()["publications"], 0)

    def test_fetch(self) -> None:
        """RFC 6665 4.4.3.

        A SUBSCRIBE with Expires 0 fetches the state once and ends.
        """
        self.bob.publish(pidf())
        response = self.alice.subscribe(expires=0)
        self.assertEqual((response.code, response.header("expires")), (200, "0"))
        [notify] = self.alice.notifies()
        self.assertEqual(
            notify.header("subscription-state"), "terminated;reason=timeout"
        )
        self.assertEqual(basics(notify), ["open"])

    def test_domainNotServed(self) -> None:
        """A SUBSCRIBE for a domain the server does not serve gets 404."""
        response = self.alice.subscribe("sip:bob@example.net")
        self.assertEqual(response.code, 200)
        server = Server(domains=("example.org",))
        self.addCleanup(server.close)
        alice = Subscriber(server, "alice", "192.0.2.20", 5070)
        self.assertEqual(alice.subscribe("sip:bob@example.com").code, 404)

    def test_presentityNormalised(self) -> None:
        """RFC 3261 19.1.4.

        Escaped user parts and host case name the same presentity.
        """
        self.bob.publish(pidf(), presentity="sip:%62ob@EXAMPLE.com")
        notify = self.subscribed()
        self.assertEqual(basics(notify), ["open"])


class ServerHeaderTests(CoreTestCase):
    """Every response names the server in one Server header (RFC 3261 20.35)."""

    def ask(self, method: str, uri: str = "sip:bob@example.com") -> SIPResponse:
        """Send bob's request of ``method`` and return its response."""
        self.bob.send(self.bob.request(method, uri, to=f"<{self.bob.aor}>"))
        return self.bob.response()

    def test_everyResponse(self) -> None:
        """Successes and errors of every method, and the 503 of a closed store."""
        responses = [
            self.ask("OPTIONS"),
            self.bob.publish(pidf()),
            self.bob.publish(pidf(), event="nope"),
            self.bob.publish(None, etag="unknown"),
            self.alice.subscribe(),
            self.alice.subscribe(event="nope"),
            self.ask("REGISTER", "sip:example.com"),
            self.ask("INVITE"),
        ]
        self.server.stack.storage.refused = "the test refuses"
        responses.append(self.ask("OPTIONS"))
        self.assertEqual(
            [r.code for r in responses], [200, 200, 489, 412, 200, 489, 200, 405, 503]
        )
        for response in responses:
            self.assertEqual(response.headerValues("server"), [SERVER])


class RegistrarTests(CoreTestCase):
    """REGISTER, RFC 3261 section 10.3."""

    def register(
        self, contact: str | None, expires: int | None = None, callId: str = "reg-1"
    ) -> SIPResponse:
        """REGISTER bob with a Contact (None: none) and return the response."""
        headers = []
        if expires is not None:
            headers.append(("Expires", str(expires)))
        data = self.bob.request(
            "REGISTER",
            "sip:example.com",
            headers,
            callId=callId,
            to=f"<{self.bob.aor}>",
        )
        if contact is not None:
            data = data.replace(
                b"Contact: <sip:bob@192.0.2.21:5071>", f"Contact: {contact}".encode()
            )
        else:
            data = data.replace(b"Contact: <sip:bob@192.0.2.21:5071>\r\n", b"")
        self.bob.send(data)
        return self.bob.response()

    def test_bind(self) -> None:
        """RFC 3261 10.3.

        A REGISTER binds the Contact and the 200 lists it with its expiry.
        """
        response = self.register("<sip:bob@192.0.2.21:5071>", 600)
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headerValues("contact"), ["<sip:bob@192.0.2.21:5071>;expires=600"]
        )

    def test_contactExpiresParam(self) -> None:
        """RFC 3261 10.2.1.1: a Contact expires parameter wins over Expires."""
        response = self.register("<sip:bob@192.0.2.21:5071>;expires=120", 600)
        self.assertEqual(
            response.headerValues("contact"), ["<sip:bob@192.0.2.21:5071>;expires=120"]
        )

    def test_tooBrief(self) -> None:
        """RFC 3261 10.3 step 7: below the minimum gets 423 with Min-Expires."""
        response = self.register("<sip:bob@192.0.2.21:5071>", 10)
        self.assertEqual(response.code, 423)
        self.assertEqual(response.header("min-expires"), "60")

    def test_starRemovesAll(self) -> None:
        """RFC 3261 10.2.2: Contact * with Expires 0 removes every binding."""
        self.register("<sip:bob@192.0.2.21:5071>", 600)
        response = self.register("*", 0)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headerValues("contact"), [])
        self.assertEqual(self.register("*", 600).code, 400)

    def test_query(self) -> None:
        """RFC 3261 10.2.3: a REGISTER without Contact lists the bindings."""
        self.register("<sip:bob@192.0.2.21:5071>", 600)
        response = self.register(None)
        self.assertEqual(len(response.headerValues("contact")), 1)

    def test_expiry(self) -> None:
        """A binding not refreshed expires."""
        self.register("<sip:bob@192.0.2.21:5071>", 60)
        self.server.advance(61)
        self.assertEqual(self.register(None).headerValues("contact"), [])
