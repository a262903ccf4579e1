"""presence.testing exports what a writer of an event package needs, and no more.

The in-memory server and scripted user agents, and the fakes; helpers that
need a database server or real sockets live in ``test/support``.
"""

from __future__ import annotations

import importlib

from twisted.trial.unittest import SynchronousTestCase

import presence.testing

EXPORTED = {
    "PIDF",
    "SERVER",
    "UA",
    "FakeDatagramTransport",
    "FakeResolver",
    "RecordingSink",
    "RecordingUser",
    "Server",
    "Subscriber",
    "pidf",
    "requestBytes",
    "responseBytes",
}


class ExportsTests(SynchronousTestCase):
    """The public names of `presence.testing`."""

    def test_exactlyThese(self) -> None:
        """``__all__`` names exactly the pinned names, each once."""
        self.assertEqual(sorted(presence.testing.__all__), sorted(EXPORTED))

    def test_eachImportable(self) -> None:
        """Every exported name is defined, and a star import gives exactly them."""
        for name in EXPORTED:
            self.assertTrue(hasattr(presence.testing, name), name)
        namespace: dict[str, object] = {}
        exec("from presence.testing import *", namespace)
        del namespace["__builtins__"]
        self.assertEqual(set(namespace), EXPORTED)

    def test_nothingOfTheTestServers(self) -> None:
        """No database, proxy or real-socket helper is left in the package."""
        for name in (
            "PG_DSN",
            "NO_PG",
            "pgDSN",
            "pgURL",
            "pgAddress",
            "PostgresDatabase",
            "CuttableProxy",
            "startServer",
            "SocketUA",
        ):
            self.assertFalse(hasattr(presence.testing, name), name)
        with self.assertRaises(ImportError):
            importlib.import_module("presence.scripted")
