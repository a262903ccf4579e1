"""Tests for presence.ctl, the presence-ctl command."""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any

from twisted.internet import reactor
from twisted.python import usage
from twisted.trial.unittest import TestCase

from presence.ctl import Options, dump, openDatabase, run
from presence.storage.credentials import Credentials, SQLCredentialStore
from presence.storage.records import Batch, Binding, Publication, Subscription
from presence.storage.statements import SCHEMA_VERSION


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


class UserCommandTests(TestCase):
    """presence-ctl user add, list and remove against a SQLite database."""

    timeout = 20

    async def setUp(self) -> None:  # type: ignore[override]  # trial awaits it
        """A database with the schema, and a configuration file naming it."""
        directory = self.mktemp()
        os.makedirs(directory)
        self.url = f"sqlite:{directory}/presence.sqlite"
        self.config = os.path.join(directory, "presence.toml")
        self.writeConfig(f'database = "{self.url}"\n')
        status, _ = await self.command("db", "init")
        self.assertEqual(status, 0)

    def writeConfig(self, text: str, mode: str = "w") -> None:
        """Write (or append to) the configuration file."""
        with open(self.config, mode) as f:
            f.write(text)

    async def command(self, *argv: str, stdin: str = "") -> tuple[int, str]:
        """Run presence-ctl with the test's configuration; status and output."""
        parsed = options("--config", self.config, *argv)
        if parsed.subCommand == "user":
            parsed.subOptions.stdin = io.StringIO(stdin)
        out = io.StringIO()
        return await run(parsed, reactor, out), out.getvalue()

    async def row(self, username: str, domain: str) -> Credentials | None:
        """The subscriber row of a user."""
        database = openDatabase(self.url, reactor)
        await database.start()
        try:
            return await SQLCredentialStore(database).credentials(username, domain)
        finally:
            await database.stop()

    async def test_addAsOpenSIPSStoresIt(self) -> None:
        """Add stores ha1 = MD5(user:realm:password), the SHA-2 hashes, no password.

        The realm is the domain unless auth_realm says otherwise.
        """
        status, text = await self.command(
            "user", "add", "--password-stdin", "alice@Example.com", stdin="s3cret\n"
        )
        self.assertEqual(
            (status, text), (0, "alice@example.com added (realm example.com)\n")
        )
        row = await self.row("alice", "example.com")
        self.assertEqual(
            row,
            Credentials(
                "alice",
                "example.com",
                "",
                hashlib.md5(b"alice:example.com:s3cret").hexdigest(),
                hashlib.sha256(b"alice:example.com:s3cret").hexdigest(),
                hashlib.new("sha512_256", b"alice:example.com:s3cret").hexdigest(),
            ),
        )

    async def test_storePassword(self) -> None:
        """The clear password is kept only with --store-password."""
        await self.command(
            "user",
            "add",
            "--password-stdin",
            "--store-password",
            "sip:bob@example.com",
            stdin="pw\r\n",
        )
        row = await self.row("bob", "example.com")
        assert row is not None
        self.assertEqual(row.password, "pw")

    async def test_configuredRealm(self) -> None:
        """With auth_realm, the hashes are of that realm."""
        self.writeConfig('auth_realm = "presence"\n', "a")
        _, text = await self.command(
            "user", "add", "--password-stdin", "carol@example.com", stdin="x\n"
        )
        self.assertIn("(realm presence)", text)
        row = await self.row("carol", "example.com")
        assert row is not None
        self.assertEqual(row.ha1, hashlib.md5(b"carol:presence:x").hexdigest())

    async def test_changeListRemove(self) -> None:
        """Add again changes the password; list shows no secret; remove removes."""
        await self.command("user", "add", "--password-stdin", "bob@b.org", stdin="1\n")
        status, text = await self.command(
            "user", "add", "--password-stdin", "bob@b.org", stdin="2\n"
        )
        self.assertIn("bob@b.org changed", text)
        await self.command("user", "add", "--password-stdin", "al@a.org", stdin="3\n")
        status, text = await self.command("user", "list")
        self.assertEqual(
            text,
            "al@a.org hashes: MD5 SHA-256 SHA-512-256\n"
            "bob@b.org hashes: MD5 SHA-256 SHA-512-256\n",
        )
        status, text = await self.command("user", "list", "B.org")
        self.assertEqual(
            text.splitlines(), ["bob@b.org hashes: MD5 SHA-256 SHA-512-256"]
        )
        status, text = await self.command("user", "remove", "bob@b.org")
        self.assertEqual((status, text), (0, "bob@b.org removed\n"))
        self.assertIsNone(await self.row("bob", "b.org"))
        status, text = await self.command("user", "remove", "bob@b.org")
        self.assertEqual((status, text), (1, ""))

    async def test_refused(self) -> None:
        """An empty password or one too long to store fails; nothing is written."""
        status, _ = await self.command(
            "user", "add", "--password-stdin", "bob@b.org", stdin="\n"
        )
        self.assertEqual(status, 2)
        status, _ = await self.command(
            "user",
            "add",
            "--password-stdin",
            "--store-password",
            "bob@b.org",
            stdin="x" * 26 + "\n",
        )
        self.assertEqual(status, 2)
        self.assertIsNone(await self.row("bob", "b.org"))

    def test_usage(self) -> None:
        """An address without a domain, or a missing action, is a usage error."""
        self.assertRaises(usage.UsageError, options, "--config", self.config, "user")
        for address in ("bob", "@b.org", "bob@"):
            self.assertRaises(
                usage.UsageError,
                options,
                "--config",
                self.config,
                "user",
                "remove",
                address,
            )

    async def test_upgradeFromVersion1(self) -> None:
        """Upgrade brings a version 1 database to this version, then says so."""
        database = openDatabase(self.url, reactor)
        await database.start()
        try:
            await database.runner.runInteraction(
                [
                    ("DROP TABLE subscriber", {}),
                    ("UPDATE version SET table_version = 1", {}),
                ]
            )
        finally:
            await database.stop()
        status, _ = await self.command("user", "list")
        self.assertEqual(status, 1)
        status, text = await self.command("db", "upgrade")
        self.assertEqual(
            (status, text), (0, f"schema upgraded from version 1 to {SCHEMA_VERSION}\n")
        )
        status, text = await self.command("user", "list")
        self.assertEqual((status, text), (0, ""))
