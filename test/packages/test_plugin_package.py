"""An event package written outside the project runs on the unchanged core.

``x-weather`` is made up: a weather station PUBLISHes a one-line forecast as
``text/plain``, and anyone may SUBSCRIBE to it. The package is defined here,
in the test, and registered on a running server; nothing in ``presence/``
names it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from presence.packages.interfaces import Body, ExpiryRange, IEventPackage
from presence.sip.errors import BadRequest
from presence.sip.message import SIPRequest, SIPResponse
from presence.storage.records import Publication, Subscription
from presence.testing import UA, Server, Subscriber

TEXT: Final = "text/plain"


@implementer(IEventPackage)
class WeatherPackage:
    """``x-weather``: the newest one-line forecast of a weather station."""

    name = "x-weather"
    acceptTypes: Final = [TEXT]
    notifyTypes: Final = [TEXT]
    acceptsPublish = True
    needsAuthorisation = False
    ownerOnly = False
    watcherInfo = None
    publishExpires = ExpiryRange(default=1800, minimum=60, maximum=3600)
    subscribeExpires = ExpiryRange(default=3600, minimum=60, maximum=7200)

    def validate(self, body: bytes, contentType: str) -> None:
        """Accept one line of UTF-8 text (the core has checked the type)."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("forecast is not UTF-8") from None
        if not text.strip() or "\n" in text.rstrip("\r\n"):
            raise BadRequest("forecast must be one line")

    def notifyBody(
        self,
        presentity: str,
        subscription: Subscription,
        publications: Sequence[Publication],
    ) -> Body | None:
        """The newest forecast, or ``unknown`` when none is published."""
        if not publications:
            return Body(TEXT, b"unknown")
        return Body(TEXT, publications[-1].body)


class WeatherPackageTests(SynchronousTestCase):
    """The toy package object."""

    def test_interface(self) -> None:
        """WeatherPackage provides IEventPackage."""
        self.assertTrue(verifyObject(IEventPackage, WeatherPackage()))


class PluginTests(SynchronousTestCase):
    """x-weather through the whole server over in-memory transports.

    A station publishes the forecast of sip:paris@example.com; alice watches it.
    """

    def setUp(self) -> None:
        """Start a server, register the package, and make the two user agents."""
        self.server = Server()
        self.addCleanup(self.server.close)
        self.server.register(WeatherPackage())
        self.station = UA(self.server, "station", "192.0.2.50", 5090)
        self.alice = Subscriber(self.server, "alice", "192.0.2.20", 5070)

    def publish(self, body: bytes | None, **kw: object) -> str:
        """The station publishes; return the SIP-ETag."""
        response = self.station.publish(
            body,
            event="x-weather",
            contentType=TEXT,
            presentity="sip:paris@example.com",
            **kw,  # type: ignore[arg-type]
        )
        self.assertEqual(response.code, 200, response.phrase)
        return response.header("sip-etag") or ""

    def nextNotify(self) -> SIPRequest:
        """The one NOTIFY alice got since the last call, answered."""
        [notify] = self.alice.notifies()
        self.alice.answer(notify)
        return notify

    def test_unknownBeforeRegistration(self) -> None:
        """RFC 6665 4.2.1.1: a server without the package answers 489."""
        server = Server()
        self.addCleanup(server.close)
        alice = Subscriber(server, "alice", "192.0.2.20", 5070)
        response = alice.subscribe("sip:paris@example.com", event="x-weather")
        self.assertEqual(response.code, 489)

    def test_publishSubscribeNotify(self) -> None:
        """RFC 6665 4.2 / RFC 3903 6: publish, subscribe, and get the forecast."""
        self.publish(b"sunny, 21C")
        response = self.alice.subscribe("sip:paris@example.com", event="x-weather")
        self.assertEqual((response.code, response.header("expires")), (200, "600"))
        notify = self.nextNotify()
        self.assertEqual(notify.header("event"), "x-weather")
        self.assertEqual(notify.header("subscription-state"), "active;expires=600")
        self.assertEqual(notify.header("content-type"), TEXT)
        self.assertEqual(notify.body, b"sunny, 21C")

    def test_modifyAndExpiry(self) -> None:
        """RFC 3903 4.4 and 5: a new forecast is sent; an expired one is unknown."""
        etag = self.publish(b"sunny, 21C", expires=60)
        self.alice.subscribe("sip:paris@example.com", event="x-weather")
        self.assertEqual(self.nextNotify().body, b"sunny, 21C")
        self.publish(b"rain, 14C", etag=etag, expires=60)
        self.assertEqual(self.nextNotify().body, b"rain, 14C")
        self.server.advance(61)
        self.assertEqual(self.nextNotify().body, b"unknown")

    def test_packageRules(self) -> None:
        """RFC 3903 6: the package's bounds, validation and type answer PUBLISH."""

        def publish(
            body: bytes, contentType: str = TEXT, expires: int = 1800
        ) -> SIPResponse:
            return self.station.publish(
                body,
                expires=expires,
                event="x-weather",
                contentType=contentType,
                presentity="sip:paris@example.com",
            )

        tooBrief = publish(b"fog", expires=10)
        self.assertEqual((tooBrief.code, tooBrief.header("min-expires")), (423, "60"))
        lowered = publish(b"fog", expires=99999)
        self.assertEqual((lowered.code, lowered.header("expires")), (200, "3600"))
        malformed = publish(b"fog\nand rain")
        self.assertEqual(
            (malformed.code, malformed.phrase), (400, "forecast must be one line")
        )
        wrongType = publish(b"{}", contentType="application/json")
        self.assertEqual((wrongType.code, wrongType.header("accept")), (415, TEXT))

    def test_advertised(self) -> None:
        """RFC 3261 11.2 / RFC 6665 8.2.2: OPTIONS lists the event and its type."""
        self.alice.send(self.alice.request("OPTIONS", "sip:example.com"))
        response = self.alice.response()
        self.assertIn("x-weather", response.header("allow-events") or "")
        self.assertIn(TEXT, response.header("accept") or "")
