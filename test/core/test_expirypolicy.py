"""Tests for presence.core.expirypolicy, and the expiry settings end to end.

The configured ``min_expires``, ``max_expires``, ``default_expires`` (and
their ``_publish`` twins, and the ``registrar_`` ones) as PUBLISH, SUBSCRIBE
and REGISTER meet them on a whole in-memory server.
"""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from presence.config import Config
from presence.core.expirypolicy import (
    ExpiryOverrides,
    ExpiryPolicy,
    negotiateExpires,
    publishExpires,
    subscribeExpires,
)
from presence.core.publish import PublishHandler
from presence.packages.interfaces import ExpiryRange, IEventPackage
from presence.packages.presence import PresencePackage
from presence.sip.errors import IntervalTooBrief
from presence.sip.message import SIPResponse
from presence.stack import buildStack
from presence.testing import UA, Server, Subscriber, pidf


class OverridesTests(SynchronousTestCase):
    """`ExpiryOverrides.apply`: configured bounds over a package's own."""

    declared = ExpiryRange(default=3600, minimum=60, maximum=7200)

    def test_noneSet(self) -> None:
        """With nothing configured the package's range applies unchanged."""
        self.assertEqual(ExpiryOverrides().apply(self.declared), self.declared)

    def test_allSet(self) -> None:
        """Every bound configured replaces the package's."""
        overrides = ExpiryOverrides(default=300, minimum=10, maximum=600)
        self.assertEqual(overrides.apply(self.declared), ExpiryRange(300, 10, 600))

    def test_onlyItsOwnBound(self) -> None:
        """A setting replaces its own bound; the package's others stay."""
        self.assertEqual(
            ExpiryOverrides(minimum=10).apply(self.declared),
            ExpiryRange(3600, 10, 7200),
        )
        self.assertEqual(
            ExpiryOverrides(maximum=86400).apply(self.declared),
            ExpiryRange(3600, 60, 86400),
        )
        self.assertEqual(
            ExpiryOverrides(default=120).apply(self.declared),
            ExpiryRange(120, 60, 7200),
        )

    def test_packageDefaultClamped(self) -> None:
        """The package's default, kept, is clamped into the configured range."""
        self.assertEqual(
            ExpiryOverrides(maximum=600).apply(self.declared),
            ExpiryRange(600, 60, 600),
        )
        self.assertEqual(
            ExpiryOverrides(minimum=3600).apply(ExpiryRange(600, 60, 7200)),
            ExpiryRange(3600, 3600, 7200),
        )

    def test_packageBoundsYield(self) -> None:
        """A configured bound beyond the package's other bound moves that one.

        A minimum above the package's maximum raises the maximum to it; a
        maximum below the package's minimum lowers the minimum to it.
        """
        self.assertEqual(
            ExpiryOverrides(minimum=3000).apply(ExpiryRange(600, 60, 1800)),
            ExpiryRange(3000, 3000, 3000),
        )
        self.assertEqual(
            ExpiryOverrides(maximum=30).apply(self.declared),
            ExpiryRange(30, 30, 30),
        )

    def test_configuredDefaultKept(self) -> None:
        """A configured default outside the package's bounds widens them."""
        self.assertEqual(
            ExpiryOverrides(default=30).apply(self.declared),
            ExpiryRange(30, 30, 7200),
        )
        self.assertEqual(
            ExpiryOverrides(default=10000).apply(self.declared),
            ExpiryRange(10000, 60, 10000),
        )


class NegotiateTests(SynchronousTestCase):
    """`negotiateExpires`: the rule of RFC 3903 section 6 and RFC 6665."""

    bounds = ExpiryRange(default=300, minimum=10, maximum=600)

    def test_rule(self) -> None:
        """Absent: the default; 0 stays; too brief: 423; too long: lowered."""
        self.assertEqual(negotiateExpires(None, self.bounds), 300)
        self.assertEqual(negotiateExpires(0, self.bounds), 0)
        self.assertEqual(negotiateExpires(10, self.bounds), 10)
        self.assertEqual(negotiateExpires(601, self.bounds), 600)
        error = self.assertRaises(IntervalTooBrief, negotiateExpires, 9, self.bounds)
        self.assertIn(("Min-Expires", "10"), error.headers)


class PolicyTests(SynchronousTestCase):
    """`ExpiryPolicy`: worked out once per package, not per request."""

    def test_oncePerPackage(self) -> None:
        """The range is read at construction and never again."""
        package = PresencePackage()
        reads: list[IEventPackage] = []

        def declared(package: IEventPackage) -> ExpiryRange:
            reads.append(package)
            return publishExpires(package)

        policy = ExpiryPolicy(declared, ExpiryOverrides(minimum=10), [package])
        self.assertEqual(reads, [package])
        for requested in (None, 20, 999999, 0):
            policy.negotiate(package, requested)
        self.assertEqual(reads, [package])
        self.assertEqual(policy.bounds(package), ExpiryRange(3600, 10, 7200))

    def test_laterAndReplacedPackages(self) -> None:
        """A package seen later gets its range; one replaced gets a new one."""
        policy = ExpiryPolicy(subscribeExpires, ExpiryOverrides(maximum=600))
        first = PresencePackage(subscribeExpires=ExpiryRange(300, 30, 900))
        self.assertEqual(policy.bounds(first), ExpiryRange(300, 30, 600))
        second = PresencePackage(subscribeExpires=ExpiryRange(1200, 120, 2400))
        self.assertEqual(policy.bounds(second), ExpiryRange(600, 120, 600))

    def test_builtFromTheConfig(self) -> None:
        """The stack gives each handler a policy with the configured bounds."""
        config = Config(
            database="memory",
            minExpires=30,
            maxExpires=900,
            defaultExpires=300,
            minExpiresPublish=10,
            maxExpiresPublish=120,
            defaultExpiresPublish=60,
        )
        stack = buildStack(config, MemoryReactorClock())
        presence = stack.packages.get("presence")
        assert presence is not None
        self.assertEqual(
            stack.subscribe.expiry.bounds(presence), ExpiryRange(300, 30, 900)
        )
        self.assertEqual(
            stack.publish.expiry.bounds(presence), ExpiryRange(60, 10, 120)
        )

    def test_unsetKeepsThePackages(self) -> None:
        """Without settings every package keeps its own declared range."""
        stack = buildStack(Config(database="memory"), MemoryReactorClock())
        for package in stack.packages:
            self.assertEqual(
                stack.subscribe.expiry.bounds(package), package.subscribeExpires
            )
            if package.acceptsPublish:
                self.assertEqual(
                    stack.publish.expiry.bounds(package), package.publishExpires
                )

    def test_handlersWithoutPolicy(self) -> None:
        """Handlers built without a policy use the packages' own ranges."""
        stack = buildStack(Config(database="memory"), MemoryReactorClock())
        handler = PublishHandler(
            stack.reactor, stack.store, stack.packages, stack.notifier
        )
        presence = stack.packages.get("presence")
        assert presence is not None
        self.assertEqual(handler.expiry.overrides, ExpiryOverrides())
        self.assertEqual(handler.expiry.bounds(presence), presence.publishExpires)


class PublishSettingsTests(SynchronousTestCase):
    """PUBLISH under ``min_expires_publish`` and its twins."""

    def server(self, **settings: object) -> UA:
        """A server with these settings, and bob to publish to it."""
        server = Server(**settings)
        self.addCleanup(server.close)
        return UA(server, "bob", "192.0.2.21", 5071)

    def test_tooBriefGetsConfiguredMinimum(self) -> None:
        """RFC 3903 section 6, step 4: 423 with the configured Min-Expires.

        "Only if the requested expiration interval is greater than zero and
        less than a locally-configured minimum, the ESC MAY reject the
        publication with a response of 423 (Interval Too Brief) [...] This
        response MUST contain a Min-Expires header field that states the
        minimum expiration interval the ESC is willing to honor."
        """
        bob = self.server(minExpiresPublish=300)
        response = bob.publish(pidf(), expires=299)
        self.assertEqual((response.code, response.header("min-expires")), (423, "300"))
        self.assertEqual(bob.publish(pidf(), expires=300).code, 200)

    def test_shortIntervalAccepted(self) -> None:
        """A 20 s publication is taken with ``min_expires_publish = 10``.

        baresip publishes with ``pubint=20``; with the built-in minimum of 60
        it gets 423 and never retries. RFC 3903 section 6, step 4: "Only if
        the requested expiration interval is [...] less than a
        locally-configured minimum, the ESC MAY reject the publication".
        """
        bob = self.server(minExpiresPublish=10)
        response = bob.publish(pidf(), expires=20)
        self.assertEqual((response.code, response.header("expires")), (200, "20"))
        etag = response.header("sip-etag")
        refreshed = bob.publish(None, etag=etag, expires=20)
        self.assertEqual((refreshed.code, refreshed.header("expires")), (200, "20"))
        self.assertEqual(self.server().publish(pidf(), expires=20).code, 423)

    def test_defaultWhenAbsent(self) -> None:
        """RFC 3903 section 6, step 4: no Expires takes the configured default.

        "If the request has an Expires header field, that value MUST be
        taken as the requested expiration. Else, a locally-configured
        default value MUST be taken as the requested expiration."
        """
        bob = self.server(defaultExpiresPublish=120)
        response = bob.publish(pidf(), expires=None)
        self.assertEqual((response.code, response.header("expires")), (200, "120"))

    def test_loweredToConfiguredMaximum(self) -> None:
        """RFC 3903 section 6, step 4: a long expiry is lowered to the maximum.

        "The ESC MAY choose an expiration less than the requested expiration
        interval." The 200 gives the expiry granted, and the publication
        lasts that long.
        """
        bob = self.server(maxExpiresPublish=900)
        response = bob.publish(pidf(), expires=3600)
        self.assertEqual((response.code, response.header("expires")), (200, "900"))
        bob.server.advance(901)
        gone = bob.publish(None, etag=response.header("sip-etag"), expires=600)
        self.assertEqual(gone.code, 412)

    def test_zeroAlwaysAllowed(self) -> None:
        """RFC 3903 section 6, step 4: 0 is never too brief; it removes."""
        bob = self.server(minExpiresPublish=300)
        etag = bob.publish(pidf(), expires=300).header("sip-etag")
        response = bob.publish(None, etag=etag, expires=0)
        self.assertEqual((response.code, response.header("expires")), (200, "0"))


class SubscribeSettingsTests(SynchronousTestCase):
    """SUBSCRIBE under ``min_expires``, ``max_expires``, ``default_expires``."""

    def watcher(self, **settings: object) -> Subscriber:
        """A server with these settings, and alice to subscribe to it."""
        server = Server(**settings)
        self.addCleanup(server.close)
        return Subscriber(server, "alice", "192.0.2.20", 5070)

    def test_tooBriefGetsConfiguredMinimum(self) -> None:
        """RFC 6665 section 4.2.1.1: 423 with the configured Min-Expires.

        "If and only if the expiration interval is greater than zero AND
        smaller than one hour AND less than a notifier-configured minimum,
        the notifier MAY return a 423 (Interval Too Brief) error that
        contains a "Min-Expires" header field."
        """
        alice = self.watcher(minExpires=600)
        response = alice.subscribe(expires=599)
        self.assertEqual((response.code, response.header("min-expires")), (423, "600"))
        self.assertEqual(alice.subscribe(expires=600).code, 200)

    def test_shortIntervalAccepted(self) -> None:
        """A 20 s subscription is taken with ``min_expires = 10``."""
        alice = self.watcher(minExpires=10)
        response = alice.subscribe(expires=20)
        self.assertEqual((response.code, response.header("expires")), (200, "20"))

    def test_defaultWhenAbsent(self) -> None:
        """RFC 6665 section 3.1.1: no Expires takes the configured default.

        "If no "Expires" header field is present in a SUBSCRIBE request, the
        implied default MUST be defined by the event package being used."
        The setting replaces every package's default.
        """
        alice = self.watcher(defaultExpires=240)
        response = alice.subscribe(expires=None)
        self.assertEqual((response.code, response.header("expires")), (200, "240"))
        winfo = alice.subscribe(
            "sip:alice@example.com", expires=None, event="presence.winfo"
        )
        self.assertEqual((winfo.code, winfo.header("expires")), (200, "240"))

    def test_loweredToConfiguredMaximum(self) -> None:
        """RFC 6665 section 3.1.1: the 200 may shorten, never lengthen.

        "200-class responses to SUBSCRIBE requests also MUST contain an
        "Expires" header field. The period of time in the response MAY be
        shorter but MUST NOT be longer than specified in the request."
        """
        alice = self.watcher(maxExpires=300)
        response = alice.subscribe(expires=3600)
        self.assertEqual((response.code, response.header("expires")), (200, "300"))

    def test_maximumAboveTheBuiltIn(self) -> None:
        """An operator may grant longer subscriptions than the built-in 7200."""
        alice = self.watcher(maxExpires=86400)
        response = alice.subscribe(expires=20000)
        self.assertEqual(response.header("expires"), "20000")

    def test_zeroAlwaysAllowed(self) -> None:
        """RFC 6665 section 4.2.1.1: only an interval above zero is too brief.

        Expires 0 stays a fetch, whatever the minimum.
        """
        alice = self.watcher(minExpires=600)
        response = alice.subscribe(expires=0)
        self.assertEqual((response.code, response.header("expires")), (200, "0"))


class RegisterSettingsTests(SynchronousTestCase):
    """REGISTER under the ``registrar_`` settings."""

    def setUp(self) -> None:
        """Nothing yet: the first REGISTER builds the server."""
        self.bob: UA | None = None

    def register(
        self, expires: int | None, contactParams: str = "", **settings: object
    ) -> SIPResponse:
        """REGISTER bob, at a server built with these settings the first time."""
        if self.bob is None:
            server = Server(**settings)
            self.addCleanup(server.close)
            self.bob = UA(server, "bob", "192.0.2.21", 5071)
        bob = self.bob
        headers = [] if expires is None else [("Expires", str(expires))]
        data = bob.request(
            "REGISTER", "sip:example.com", headers, callId="reg-1", to=f"<{bob.aor}>"
        )
        contact = b"<sip:bob@192.0.2.21:5071>"
        data = data.replace(contact, contact + contactParams.encode())
        bob.send(data)
        return bob.response()

    def test_defaults(self) -> None:
        """Unset, the registrar keeps its own 60, 3600 and 7200."""
        self.assertEqual(self.register(59).code, 423)
        assert self.bob is not None
        registrar = self.bob.server.stack.registrar
        self.assertEqual(
            (registrar.minExpires, registrar.defaultExpires, registrar.maxExpires),
            (60, 3600, 7200),
        )

    def test_onlyItsOwnBound(self) -> None:
        """A registrar setting replaces its own bound; the default is clamped.

        ``registrar_max_expires = 1800`` alone lowers the default of 3600 to
        1800 rather than being refused.
        """
        self.register(None, registrarMaxExpires=1800)
        assert self.bob is not None
        registrar = self.bob.server.stack.registrar
        self.assertEqual(
            (registrar.minExpires, registrar.defaultExpires, registrar.maxExpires),
            (60, 1800, 1800),
        )

    def test_tooBriefGetsConfiguredMinimum(self) -> None:
        """RFC 3261 section 10.3 step 7: 423 with the configured Min-Expires.

        "If and only if the requested expiration interval is greater than
        zero AND smaller than one hour AND less than a registrar-configured
        minimum, the registrar MAY reject the registration with a response
        of 423 (Interval Too Brief). This response MUST contain a
        Min-Expires header field that states the minimum expiration interval
        the registrar is willing to honor."
        """
        response = self.register(119, registrarMinExpires=120)
        self.assertEqual((response.code, response.header("min-expires")), (423, "120"))

    def test_shortIntervalAccepted(self) -> None:
        """A 20 s registration is taken with ``registrar_min_expires = 10``."""
        response = self.register(20, registrarMinExpires=10)
        self.assertEqual(
            response.headerValues("contact"), ["<sip:bob@192.0.2.21:5071>;expires=20"]
        )

    def test_defaultWhenAbsent(self) -> None:
        """RFC 3261 section 10.3 step 7: neither given takes the default.

        "If there is neither, a locally-configured default value MUST be
        taken as the requested expiration."
        """
        response = self.register(None, registrarDefaultExpires=900)
        self.assertEqual(
            response.headerValues("contact"), ["<sip:bob@192.0.2.21:5071>;expires=900"]
        )

    def test_loweredToConfiguredMaximum(self) -> None:
        """RFC 3261 section 10.3 step 7: a long expiry is lowered.

        "The registrar MAY choose an expiration less than the requested
        expiration interval." The 200 lists the binding with the expiry
        granted, whether asked in Expires or in the Contact's parameter.
        """
        response = self.register(3600, registrarMaxExpires=1800)
        self.assertEqual(
            response.headerValues("contact"), ["<sip:bob@192.0.2.21:5071>;expires=1800"]
        )
        response = self.register(None, ";expires=5000")
        self.assertEqual(
            response.headerValues("contact"), ["<sip:bob@192.0.2.21:5071>;expires=1800"]
        )

    def test_zeroAlwaysAllowed(self) -> None:
        """RFC 3261 section 10.3 step 7: only above zero is too brief; 0 removes."""
        self.register(600, registrarMinExpires=300)
        response = self.register(0)
        self.assertEqual((response.code, response.headerValues("contact")), (200, []))
