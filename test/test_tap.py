"""Tests for presence.tap and presence.config: options and the service tree."""

from __future__ import annotations

import configparser

from twisted.application import internet
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from presence.config import Config, ConfigError, fromMapping, loadFile, parseListen
from presence.tap import Options, makeService


def options(*argv: str) -> Options:
    """Parse a command line."""
    parsed = Options()
    parsed.parseOptions(list(argv))
    return parsed


class OptionsTests(SynchronousTestCase):
    """Command-line options and the configuration file."""

    def test_defaults(self) -> None:
        """With no options the server listens on UDP and TCP port 5060."""
        config = options().config
        self.assertEqual(config.listen, ("udp:5060", "tcp:5060"))
        self.assertEqual(config.domains, ())
        self.assertFalse(config.sipTrace)

    def test_listenReplacesDefault(self) -> None:
        """--listen given once or more replaces the default listeners."""
        config = options("--listen", "udp:5070:interface=127.0.0.1").config
        self.assertEqual(config.listen, ("udp:5070:interface=127.0.0.1",))

    def test_repeatable(self) -> None:
        """--listen and --domain may be repeated."""
        config = options(
            "--listen",
            "udp:5070",
            "--listen",
            "tcp:5071",
            "--domain",
            "Example.com",
            "--domain",
            "example.org",
        ).config
        self.assertEqual(config.listen, ("udp:5070", "tcp:5071"))
        self.assertEqual(config.domains, ("example.com", "example.org"))

    def test_sipTrace(self) -> None:
        """--sip-trace turns on the message trace."""
        self.assertTrue(options("--sip-trace").config.sipTrace)

    def test_badListen(self) -> None:
        """An unknown listen description is a usage error."""
        self.assertRaises(usage.UsageError, options, "--listen", "sctp:5060")
        self.assertRaises(usage.UsageError, options, "--listen", "udp:notaport")

    def test_configFile(self) -> None:
        """Settings come from the TOML file, and options override them."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(
                'listen = ["udp:5080", "tcp:5080"]\n'
                'domain = ["example.com"]\n'
                "sip_trace = true\n"
                "tcp_idle_timeout = 30\n"
            )
        config = options("--config", path, "--listen", "udp:5090").config
        self.assertEqual(config.listen, ("udp:5090",))
        self.assertEqual(config.domains, ("example.com",))
        self.assertTrue(config.sipTrace)
        self.assertEqual(config.tcpIdleTimeout, 30.0)

    def test_configFileErrors(self) -> None:
        """A missing file, bad TOML or an unknown key is a usage error."""
        self.assertRaises(usage.UsageError, options, "--config", self.mktemp())
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("listen = [\n")
        self.assertRaises(usage.UsageError, options, "--config", path)
        with open(path, "w") as f:
            f.write("no_such_setting = 1\n")
        self.assertRaises(usage.UsageError, options, "--config", path)
        with open(path, "w") as f:
            f.write('sip_trace = "yes"\n')
        self.assertRaises(usage.UsageError, options, "--config", path)

    def test_inconsistentExpiry(self) -> None:
        """An expiry minimum above its maximum in the file is a usage error.

        The message names both settings, so ``twistd presence`` says why it
        will not start.
        """
        path = self.mktemp()
        for text, names in [
            ("min_expires = 600\nmax_expires = 300\n", ("min_expires", "max_expires")),
            (
                "min_expires_publish = 600\nmax_expires_publish = 300\n",
                ("min_expires_publish", "max_expires_publish"),
            ),
            (
                "registrar_min_expires = 600\nregistrar_max_expires = 300\n",
                ("registrar_min_expires", "registrar_max_expires"),
            ),
        ]:
            with open(path, "w") as f:
                f.write(text)
            error = self.assertRaises(usage.UsageError, options, "--config", path)
            for name in names:
                self.assertIn(name, str(error))

    def test_expiryFromFile(self) -> None:
        """The expiry settings of the file reach the handlers."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("min_expires_publish = 10\nregistrar_min_expires = 20\n")
        parsed = options("--config", path, "--database", "memory")
        self.assertEqual(parsed.config.minExpiresPublish, 10)
        top = makeService(parsed, MemoryReactorClock())
        stack = top.stack
        presence = stack.packages.get("presence")
        assert presence is not None
        self.assertEqual(stack.publish.expiry.bounds(presence).minimum, 10)
        self.assertEqual(stack.registrar.minExpires, 20)

    def test_exampleConfig(self) -> None:
        """Every example configuration in etc/ loads and is valid."""
        for name in [
            "presence.toml",
            "presence-shared.toml",
            "presence-memory.toml",
            "presence-integrated-xcap.toml",
            "presence-external-xcap.toml",
        ]:
            config = loadFile(f"etc/{name}").validate()
            self.assertIsInstance(config, Config)
        self.assertTrue(loadFile("etc/presence-shared.toml").fallback2db)
        integrated = loadFile("etc/presence-integrated-xcap.toml")
        self.assertTrue(integrated.integratedXcapServer)
        self.assertFalse(integrated.forceActiveInEffect)
        external = loadFile("etc/presence-external-xcap.toml")
        self.assertEqual(external.xcapServer, ("http://127.0.0.1:8000/xcap-root",))
        self.assertFalse(external.forceActiveInEffect)
        self.assertEqual(
            loadFile("etc/presence.toml").adminListen, Config().adminListen
        )

    def test_systemdUnit(self) -> None:
        """The systemd unit runs twistd in the foreground, as its own user."""
        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.optionxform = str  # type: ignore[assignment,method-assign]
        unit.read("etc/presence.service")
        service = unit["Service"]
        command = service["ExecStart"].split()
        self.assertTrue(command[0].endswith("/twistd"))
        self.assertIn("-n", command[: command.index("presence")])
        self.assertEqual(
            command[command.index("presence") :],
            ["presence", "--config", "/etc/presence/presence.toml"],
        )
        self.assertEqual(service["Restart"], "on-failure")
        self.assertEqual(service["User"], "presence")
        self.assertEqual(service["WorkingDirectory"], "/var/lib/presence")
        self.assertIn("/var/lib/presence", service["ReadWritePaths"])


class ListenTests(SynchronousTestCase):
    """Listen descriptions in Twisted's endpoint style."""

    def test_parse(self) -> None:
        """Transport, port and interface come out of a description."""
        address = parseListen("udp:5060:interface=127.0.0.1")
        self.assertEqual(
            (address.transport, address.port, address.interface),
            ("udp", 5060, "127.0.0.1"),
        )
        address = parseListen("tcp:5061")
        self.assertEqual(
            (address.transport, address.port, address.interface), ("tcp", 5061, "")
        )

    def test_ipv6Interface(self) -> None:
        """An IPv6 interface may be written with or without escapes."""
        self.assertEqual(parseListen("udp:5060:interface=::1").interface, "::1")
        self.assertEqual(parseListen("tcp:5060:interface=\\:\\:1").interface, "::1")
        self.assertEqual(
            parseListen("tcp:5060:interface=::1").endpointDescription(),
            "tcp6:5060:interface=\\:\\:1",
        )

    def test_errors(self) -> None:
        """Bad descriptions raise ConfigError."""
        for bad in ["", "udp", "udp:", "udp:70000", "tls:5061", "udp:5060:backlog=5"]:
            self.assertRaises(ConfigError, parseListen, bad)

    def test_fromMappingTypes(self) -> None:
        """Values of the wrong type are refused."""
        self.assertRaises(ConfigError, fromMapping, {"listen": 5060})
        self.assertRaises(ConfigError, fromMapping, {"max_body_size": "big"})
        self.assertRaises(ConfigError, fromMapping({"max_body_size": 0}).validate)


class MakeServiceTests(SynchronousTestCase):
    """The service tree makeService builds (never started here)."""

    def test_defaultTree(self) -> None:
        """The default builds one UDP and one TCP listener on 5060, and the admin."""
        top = makeService(options(), MemoryReactorClock())
        children = list(top)
        self.assertEqual(len(children), 4)
        admin = top.getServiceNamed("admin")
        assert isinstance(admin, internet.StreamServerEndpointService)
        self.assertEqual(
            (admin.endpoint._port, admin.endpoint._interface),
            (8080, "127.0.0.1"),
        )
        self.assertIs(admin.factory, top.stack.admin)
        udp = [c for c in children if isinstance(c, internet.UDPServer)]
        tcp = [
            c
            for c in children
            if isinstance(c, internet.StreamServerEndpointService) and c is not admin
        ]
        self.assertEqual(len(udp), 1)
        self.assertEqual(len(tcp), 1)
        self.assertEqual(udp[0].args[0], 5060)

    def test_adminListen(self) -> None:
        """--admin-listen moves the administration site; "none" leaves it out."""
        self.assertEqual(Config().adminListen, "tcp:8080:interface=127.0.0.1")
        config = options("--admin-listen", "tcp:9090:interface=127.0.0.1").config
        self.assertEqual(config.adminListen, "tcp:9090:interface=127.0.0.1")
        top = makeService(options("--admin-listen", "none"), MemoryReactorClock())
        self.assertNotIn("admin", [c.name for c in top])
        self.assertRaises(usage.UsageError, options, "--admin-listen", "tcp:x")
        self.assertRaises(usage.UsageError, options, "--admin-listen", "http:80")
        self.assertRaises(ConfigError, fromMapping, {"admin_listen": 8080})
        self.assertEqual(
            fromMapping({"admin_listen": "none"}).validate().adminListen, "none"
        )

    def test_adminPasswordOffLoopback(self) -> None:
        """An administration site beyond loopback needs admin_password.

        Every interface (no ``interface``), or a public address, without a
        password stops the server at start; with one it is served.
        """
        for description in ("tcp:9090", "tcp:9090:interface=192.0.2.1"):
            error = self.assertRaises(
                usage.UsageError, options, "--admin-listen", description
            )
            self.assertIn("set admin_password", str(error))
        for description in (
            "tcp:9090:interface=127.0.0.1",
            "tcp6:9090:interface=\\:\\:1",
            "unix:/tmp/presence-admin.sock",
            "none",
        ):
            fromMapping({"admin_listen": description}).validate()
        config = fromMapping(
            {"admin_listen": "tcp:9090", "admin_password": "s3cret"}
        ).validate()
        self.assertEqual((config.adminUser, config.adminPassword), ("admin", "s3cret"))
        self.assertNotIn("s3cret", repr(config))
        self.assertRaises(ConfigError, fromMapping({"admin_password": ""}).validate)

    def test_listeners(self) -> None:
        """Each --listen becomes one listening service."""
        top = makeService(
            options("--listen", "udp:5070:interface=127.0.0.1", "--listen", "udp:5071"),
            MemoryReactorClock(),
        )
        udp = [c for c in top if isinstance(c, internet.UDPServer)]
        self.assertEqual(
            [(u.args[0], u.kwargs["interface"]) for u in udp],
            [(5070, "127.0.0.1"), (5071, "")],
        )

    def test_onTheReactorGiven(self) -> None:
        """The stack and the UDP listeners run on the reactor makeService is given."""
        reactor = MemoryReactorClock()
        top = makeService(options(), reactor)
        self.assertIs(top.stack.reactor, reactor)
        [udp] = [c for c in top if isinstance(c, internet.UDPServer)]
        self.assertIs(udp.reactor, reactor)

    def test_refusedStopsTheStacksReactor(self) -> None:
        """A database that cannot be used stops the stack's reactor, if running."""
        reactor = MemoryReactorClock()
        top = makeService(options(), reactor)
        top._refuse("the schema is newer than this server")
        self.assertFalse(reactor.hasStopped)
        reactor.running = True
        top._refuse("the schema is newer than this server")
        self.assertTrue(reactor.hasStopped)
        self.assertFalse(reactor.running)

    def test_stackWired(self) -> None:
        """The transports feed the transaction layer, which feeds the dispatcher."""
        top = makeService(options(), MemoryReactorClock())
        stack = top.stack
        self.assertIs(stack.transports.sink, stack.transactions)
        self.assertIs(stack.transactions.user, stack.dispatcher)
