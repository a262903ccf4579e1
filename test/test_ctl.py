"""Tests for presence.ctl, the presence-ctl command."""

from __future__ import annotations

import io
import os
from typing import Any

from twisted.internet import reactor
from twisted.python import usage
from twisted.trial.unittest import TestCase

from presence.ctl import Options, dump, openDatabase, run
from presence.storage.records import Batch, Binding, Publication, Subscription


def options(*argv: str) -> Options:
    """Parse a presence-ctl command line."""
    parsed = Options()
    parsed.parseOptions(list(argv))
    return parsed


class PresenceCtlTests(TestCase):
    """init, upgrade and dump against a SQLite database."""

    timeout = 20

    def setUp(self) -> None:
        """A database path of the test's own."""
        directory = self.mktemp()
        os.makedirs(directory)
        self.url = f"sqlite:{directory}/presence.sqlite"

    async def command(self, *argv: str) -> tuple[int, str]:
        """Run presence-ctl on the test's database; its status and output."""
        out = io.StringIO()
        status = await run(options("--database", self.url, *argv), reactor, out)
        return status, out.getvalue()

    async def test_initThenDump(self) -> None:
        """Init creates the schema; dump then lists what the server stored."""
        status, text = await self.command("db", "init")
        self.assertEqual(status, 0)
        self.assertIn("schema ready", text)
        database = openDatabase(self.url, reactor)
        await database.start()
        self.addCleanup(database.stop)
        await database.applyBatch(
            Batch(
                publications=[
                    Publication("bob@example.com", "presence", "e1", 2e9, 0, b"<x/>")
                ],
                subscriptions=[
                    Subscription(
                        "sip:bob@example.com",
                        "presence",
                        "",
                        "c1",
                        "t",
                        "f",
                        "alice",
                        "example.com",
                        "bob",
                        "example.com",
                        3,
                        1,
                        "sip:alice@192.0.2.1",
                        "",
                        2e9,
                    )
                ],
            )
        )
        status, text = await self.command("db", "dump")
        self.assertEqual(status, 0)
        self.assertIn("presentity: 1 publications", text)
        self.assertIn("bob@example.com presence etag=e1", text)
        self.assertIn("sip:bob@example.com presence <- alice@example.com active", text)
        self.assertIn("cseq=3", text)

    async def test_upgrade(self) -> None:
        """Upgrade on a current schema says there is nothing to do."""
        await self.command("db", "init")
        status, text = await self.command("db", "upgrade")
        self.assertEqual((status, "nothing to upgrade" in text), (0, True))

    async def test_dumpWithoutSchema(self) -> None:
        """Dump on a database without the schema fails and says how to make it."""
        status, text = await self.command("db", "dump")
        self.assertEqual((status, text), (1, ""))

    def test_dumpTimesFromNow(self) -> None:
        """Dump tells expiries relative to the time it is given, not the clock's."""
        rows: tuple[list[Any], ...] = (
            [Publication("bob@example.com", "presence", "e1", 1060.0, 0, b"<x/>")],
            [],
            [],
            [Binding("bob@example.com", "sip:bob@192.0.2.1", 970.0, None, "c", 1)],
        )
        out = io.StringIO()
        dump(rows, out, now=1000.0)
        text = out.getvalue()
        self.assertIn("etag=e1 expires in 60s", text)
        self.assertIn("-> sip:bob@192.0.2.1 expires 30s ago", text)

    def test_usage(self) -> None:
        """A missing or unknown action, or a memory database, is a usage error."""
        self.assertRaises(usage.UsageError, options, "--database", self.url)
        self.assertRaises(usage.UsageError, options, "--database", self.url, "db", "x")
        self.assertRaises(
            usage.UsageError, options, "--database", "memory", "db", "init"
        )
