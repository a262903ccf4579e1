"""Tests for the TLS settings of `presence.config`: listen, tls_verify, tls_ca."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from presence.config import Config, ConfigError, fromMapping, parseListen
from test.support.certificates import selfSignedCertificate


class TLSListenTests(SynchronousTestCase):
    """``tls:PORT:privateKey=KEY:certKey=CERT`` and its ``ssl:`` synonym."""

    def test_tls(self) -> None:
        """tls: is parsed for its port and passed to Twisted as ssl:."""
        address = parseListen("tls:5061:privateKey=/k.pem:certKey=/c.pem")
        self.assertEqual((address.transport, address.port), ("tls", 5061))
        self.assertEqual(
            address.endpointDescription(), "ssl:5061:privateKey=/k.pem:certKey=/c.pem"
        )

    def test_ssl(self) -> None:
        """ssl: is the same, its interface read and the rest kept as written."""
        description = "ssl:port=5062:interface=127.0.0.1:privateKey=/both.pem"
        address = parseListen(description)
        self.assertEqual(address.transport, "tls")
        self.assertEqual(address.port, 5062)
        self.assertEqual(address.interface, "127.0.0.1")
        self.assertEqual(address.endpointDescription(), description)

    def test_refused(self) -> None:
        """No port, or no privateKey, is refused when the settings are read."""
        self.assertRaises(ConfigError, parseListen, "tls:privateKey=/k.pem")
        self.assertRaises(ConfigError, parseListen, "tls:99999:privateKey=/k.pem")
        self.assertRaises(ConfigError, parseListen, "tls:5061")
        self.assertRaises(
            ConfigError, Config(listen=("tls:5061:certKey=/c.pem",)).validate
        )

    def test_filesChecked(self) -> None:
        """The key and certificate are read when the settings are checked."""
        key, cert = selfSignedCertificate(os.path.abspath(self.mktemp()))
        good = f"tls:5061:privateKey={key}:certKey={cert}"
        self.assertEqual(Config(listen=(good,)).validate().listen, (good,))
        missing = f"tls:5061:privateKey={key}.missing:certKey={cert}"
        error = self.assertRaises(ConfigError, Config(listen=(missing,)).validate)
        self.assertIn("listen", str(error))


class TLSSettingsTests(SynchronousTestCase):
    """``tls_verify`` and ``tls_ca``."""

    def test_defaults(self) -> None:
        """Off, with the system's trust store."""
        config = Config()
        self.assertFalse(config.tlsVerify)
        self.assertIsNone(config.tlsCa)

    def test_read(self) -> None:
        """Both are read from TOML keys; tls_ca must be a file."""
        _, path = selfSignedCertificate(os.path.abspath(self.mktemp()))
        config = fromMapping({"tls_verify": True, "tls_ca": path}).validate()
        self.assertTrue(config.tlsVerify)
        self.assertEqual(config.tlsCa, path)
        self.assertRaises(ConfigError, fromMapping, {"tls_verify": "yes"})
        self.assertRaises(
            ConfigError, fromMapping({"tls_ca": path + ".missing"}).validate
        )
        empty = os.path.abspath(self.mktemp())
        with open(empty, "w") as f:
            f.write("not a certificate\n")
        self.assertRaises(ConfigError, fromMapping({"tls_ca": empty}).validate)
