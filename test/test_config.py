"""Tests for presence.config: the expiry settings, read and checked."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from presence.config import Config, ConfigError, fromMapping, loadFile

#: Every expiry setting: TOML name, attribute, a valid value on its own.
EXPIRY_SETTINGS = [
    ("min_expires", "minExpires", 10),
    ("max_expires", "maxExpires", 86400),
    ("default_expires", "defaultExpires", 600),
    ("min_expires_publish", "minExpiresPublish", 10),
    ("max_expires_publish", "maxExpiresPublish", 900),
    ("default_expires_publish", "defaultExpiresPublish", 120),
    ("registrar_min_expires", "registrarMinExpires", 30),
    ("registrar_max_expires", "registrarMaxExpires", 14400),
    ("registrar_default_expires", "registrarDefaultExpires", 1800),
]


class ExpiryFileTests(SynchronousTestCase):
    """The expiry settings in a TOML file."""

    def load(self, text: str) -> Config:
        """Write ``text`` to a file and load it."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return loadFile(path)

    def test_roundTrip(self) -> None:
        """Each setting, written in TOML, comes back as its attribute."""
        for name, attribute, value in EXPIRY_SETTINGS:
            config = self.load(f"{name} = {value}\n").validate()
            self.assertEqual(getattr(config, attribute), value, name)
            for _, other, _ in EXPIRY_SETTINGS:
                if other != attribute:
                    self.assertIsNone(getattr(config, other), (name, other))

    def test_allTogether(self) -> None:
        """All the settings in one file, as etc/presence.toml shows them."""
        config = self.load(
            "".join(f"{name} = {value}\n" for name, _, value in EXPIRY_SETTINGS)
        )
        self.assertEqual(
            [getattr(config.validate(), a) for _, a, _ in EXPIRY_SETTINGS],
            [v for _, _, v in EXPIRY_SETTINGS],
        )

    def test_unsetByDefault(self) -> None:
        """With no setting every bound is the package's (or the registrar's)."""
        config = Config().validate()
        for _, attribute, _ in EXPIRY_SETTINGS:
            self.assertIsNone(getattr(config, attribute), attribute)

    def test_notWholeSeconds(self) -> None:
        """A float, a string or a boolean is refused, naming the setting."""
        for name, _, _ in EXPIRY_SETTINGS:
            for bad in ("30.0", '"30"', "true"):
                error = self.assertRaises(ConfigError, self.load, f"{name} = {bad}\n")
                self.assertEqual(
                    str(error), f"{name}: expected a whole number of seconds"
                )


class ExpiryValidationTests(SynchronousTestCase):
    """`Config.validate` refuses inconsistent expiry settings, saying why."""

    def refused(self, **settings: Any) -> str:
        """The message of the ConfigError these settings raise."""
        config = Config(**settings)
        return str(self.assertRaises(ConfigError, config.validate))

    def test_minimumAboveMaximum(self) -> None:
        """A minimum above the maximum is refused, for each method."""
        self.assertEqual(
            self.refused(minExpires=600, maxExpires=300),
            "min_expires (600) is above max_expires (300):"
            " the minimum cannot exceed the maximum",
        )
        self.assertIn(
            "min_expires_publish (600) is above max_expires_publish (300)",
            self.refused(minExpiresPublish=600, maxExpiresPublish=300),
        )
        self.assertIn(
            "registrar_min_expires (600) is above registrar_max_expires (300)",
            self.refused(registrarMinExpires=600, registrarMaxExpires=300),
        )

    def test_defaultOutside(self) -> None:
        """A default below the minimum or above the maximum is refused."""
        self.assertEqual(
            self.refused(minExpires=60, defaultExpires=30),
            "default_expires (30) is below min_expires (60):"
            " the default must lie between the minimum and the maximum",
        )
        self.assertIn(
            "default_expires_publish (900) is above max_expires_publish (600)",
            self.refused(maxExpiresPublish=600, defaultExpiresPublish=900),
        )
        self.assertIn(
            "registrar_default_expires (10) is below registrar_min_expires (20)",
            self.refused(registrarMinExpires=20, registrarDefaultExpires=10),
        )

    def test_negative(self) -> None:
        """No bound may be negative; a maximum or a default must be above 0."""
        self.assertEqual(
            self.refused(minExpires=-1), "min_expires must be 0 or more, not -1"
        )
        self.assertEqual(
            self.refused(maxExpiresPublish=0),
            "max_expires_publish must be 1 or more, not 0",
        )
        self.assertEqual(
            self.refused(registrarDefaultExpires=-5),
            "registrar_default_expires must be 1 or more, not -5",
        )

    def test_zeroMinimum(self) -> None:
        """A minimum of 0 is allowed: no interval is then too brief."""
        Config(minExpires=0, minExpiresPublish=0, registrarMinExpires=0).validate()

    def test_notIntegers(self) -> None:
        """Settings given directly must be whole seconds too."""
        self.assertEqual(
            self.refused(minExpires=2.5),
            "min_expires must be a whole number of seconds, not 2.5",
        )
        self.assertEqual(
            self.refused(defaultExpiresPublish=True),
            "default_expires_publish must be a whole number of seconds, not True",
        )

    def test_minimumAtMostAnHour(self) -> None:
        """RFC 6665 4.2.1.1 and RFC 3261 10.3: a 423 only below an hour.

        "If and only if the expiration interval is greater than zero AND
        smaller than one hour AND less than a notifier-configured minimum,
        the notifier MAY return a 423 (Interval Too Brief) error"; the
        registrar's rule is the same. RFC 3903 has no such limit for PUBLISH.
        """
        self.assertIn(
            "min_expires (3601) must be at most 3600",
            self.refused(minExpires=3601),
        )
        self.assertIn(
            "registrar_min_expires (7200) must be at most 3600",
            self.refused(registrarMinExpires=7200),
        )
        Config(minExpires=3600, registrarMinExpires=3600).validate()
        Config(minExpiresPublish=7200).validate()

    def test_everyProblemSaid(self) -> None:
        """Several problems are reported together."""
        message = self.refused(minExpires=600, maxExpires=300, defaultExpiresPublish=0)
        self.assertIn("min_expires (600) is above max_expires (300)", message)
        self.assertIn("default_expires_publish must be 1 or more, not 0", message)

    def test_onlyConfiguredBoundsCompared(self) -> None:
        """A lone bound is checked against the others configured, not the packages'.

        ``min_expires = 3000`` with a package whose maximum is lower raises
        that maximum (`presence.core.expirypolicy.ExpiryOverrides`); a lone
        ``default_expires`` likewise.
        """
        fromMapping({"min_expires": 3000}).validate()
        fromMapping({"default_expires": 10}).validate()
        fromMapping({"registrar_max_expires": 30}).validate()


class ExampleFileTests(SynchronousTestCase):
    """The commented expiry settings of etc/presence.toml."""

    def test_uncommented(self) -> None:
        """Every expiry setting is shown there, and uncommented they load."""
        with open("etc/presence.toml") as f:
            lines = f.read().splitlines()
        names = {name for name, _, _ in EXPIRY_SETTINGS}
        shown = [
            line[2:]
            for line in lines
            if line.startswith("# ") and line[2:].split(" = ")[0] in names
        ]
        self.assertEqual({line.split(" = ")[0] for line in shown}, names)
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("\n".join(shown) + "\n")
        config = loadFile(path).validate()
        self.assertEqual(config.minExpiresPublish, 10)
        self.assertEqual(config.registrarDefaultExpires, 3600)

    def test_documented(self) -> None:
        """Every expiry setting has a row in the README's configuration table."""
        with open("README.md") as f:
            readme = f.read()
        table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
        for name, _, _ in EXPIRY_SETTINGS:
            self.assertIn(f"\n| `{name}` |", table, name)


class AuthSettingsTests(SynchronousTestCase):
    """authentication, auth_algorithms, auth_realm, nonce_*, trusted_peers."""

    def test_defaults(self) -> None:
        """Off; SHA-256 then MD5; realm from the request; 300 s; random secret."""
        config = Config().validate()
        self.assertEqual(
            (
                config.authentication,
                config.authAlgorithms,
                config.authRealm,
                config.nonceLifetime,
                config.nonceSecret,
                config.trustedPeers,
            ),
            (False, ("SHA-256", "MD5"), None, 300, None, ()),
        )

    def test_fromTOML(self) -> None:
        """Every setting read from its TOML key; algorithm names in any case."""
        config = fromMapping(
            {
                "authentication": True,
                "auth_algorithms": ["md5", "Sha-256"],
                "auth_realm": "presence",
                "nonce_lifetime": 60,
                "nonce_secret": "sixteen or more characters",
                "trusted_peers": ["10.0.0.0/8", "127.0.0.1", "::1"],
            }
        ).validate()
        self.assertEqual(config.authAlgorithms, ("MD5", "SHA-256"))
        self.assertEqual(config.authRealm, "presence")
        self.assertEqual(config.nonceLifetime, 60)
        self.assertEqual(config.trustedPeers, ("10.0.0.0/8", "127.0.0.1", "::1"))

    def test_secretNotShown(self) -> None:
        """The nonce secret is left out of the configuration's repr."""
        config = Config(nonceSecret="sixteen or more characters")
        self.assertNotIn("sixteen", repr(config))

    def test_invalid(self) -> None:
        """Each bad value is refused with a sentence naming its setting."""
        cases: list[tuple[dict[str, Any], str]] = [
            ({"authAlgorithms": ()}, "auth_algorithms"),
            ({"authAlgorithms": ("SHA-1",)}, "SHA-1"),
            ({"authAlgorithms": ("MD5", "MD5")}, "twice"),
            ({"authRealm": ""}, "auth_realm"),
            ({"authRealm": 'a"b'}, "auth_realm"),
            ({"nonceLifetime": 0}, "nonce_lifetime"),
            ({"nonceSecret": "short"}, "nonce_secret"),
            ({"trustedPeers": ("10.0.0.0/33",)}, "10.0.0.0/33"),
            ({"trustedPeers": ("example.com",)}, "example.com"),
        ]
        for changes, words in cases:
            e = self.assertRaises(ConfigError, Config(**changes).validate)
            self.assertIn(words, str(e), changes)

    def test_wrongTypes(self) -> None:
        """TOML values of the wrong type are refused as they are read."""
        for key, value in [
            ("authentication", "yes"),
            ("auth_algorithms", 5),
            ("nonce_lifetime", 1.5),
            ("nonce_secret", 7),
            ("trusted_peers", [1]),
        ]:
            self.assertRaises(ConfigError, fromMapping, {key: value})


class LimitSettingsTests(SynchronousTestCase):
    """The limits: a default each, read from TOML, 0 for none."""

    def test_defaults(self) -> None:
        """Defaults that protect a small server."""
        config = Config()
        self.assertEqual(config.sourceRateLimit, 200.0)
        self.assertEqual(config.maxSubscriptionsPerWatcher, 1000)
        self.assertEqual(config.maxPublicationsPerPresentity, 32)
        self.assertEqual(config.maxTcpConnections, 1000)
        self.assertEqual(config.tcpReadTimeout, 10.0)

    def test_fromTOML(self) -> None:
        """Each is read by its snake-case name; 0 turns it off."""
        config = fromMapping(
            {
                "source_rate_limit": 50,
                "max_subscriptions_per_watcher": 0,
                "max_publications_per_presentity": 4,
                "max_tcp_connections": 10,
                "tcp_read_timeout": 2.5,
            }
        ).validate()
        self.assertEqual(config.sourceRateLimit, 50.0)
        self.assertEqual(config.maxSubscriptionsPerWatcher, 0)
        self.assertEqual(config.maxPublicationsPerPresentity, 4)
        self.assertEqual(config.maxTcpConnections, 10)
        self.assertEqual(config.tcpReadTimeout, 2.5)

    def test_invalid(self) -> None:
        """A negative limit, or a fraction of a count, is refused."""
        with self.assertRaises(ConfigError) as caught:
            fromMapping({"source_rate_limit": -1}).validate()
        self.assertIn(
            "source_rate_limit must be 0 (no limit) or more", str(caught.exception)
        )
        self.assertRaises(ConfigError, fromMapping, {"max_tcp_connections": 1.5})
        self.assertRaises(
            ConfigError, fromMapping, {"max_subscriptions_per_watcher": True}
        )

    def test_documented(self) -> None:
        """Every limit has a row in the README's configuration table."""
        with open("README.md") as f:
            readme = f.read()
        table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
        for name in (
            "source_rate_limit",
            "max_subscriptions_per_watcher",
            "max_publications_per_presentity",
            "max_tcp_connections",
            "tcp_read_timeout",
        ):
            self.assertIn(f"\n| `{name}` |", table, name)
