"""Tests for presence.ctl, the presence-ctl command."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import socket
import subprocess
import sys
import xmlrpc.client
from typing import Any

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.python import usage
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent
from twisted.web.http_headers import Headers

from presence.ctl import Options, dump, openDatabase, run
from presence.storage.credentials import Credentials, SQLCredentialStore
from presence.storage.records import Batch, Binding, Publication, Subscription
from presence.storage.statements import SCHEMA_VERSION
from presence.testing import pidf
from test.support.records import carolSubscription
from test.support.sockets import SocketUA, startServerWithAdmin, unusedTCPPort


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


class ServerCommandTests(TestCase):
    """show, subscriptions, refresh-watchers and stats against a running server."""

    timeout = 30

    async def setUp(self) -> None:  # type: ignore[override]  # trial awaits it
        """Start a server; write a configuration file naming its admin port."""
        started = await startServerWithAdmin(reactor)
        self.server, self.udpPort, _, adminPort, connections = started
        self.addCleanup(self.server.stopService)
        self.addCleanup(connections.whenClosed)
        self.config = self.writeConfig(f"tcp:{adminPort}:interface=127.0.0.1")

    def writeConfig(self, adminListen: str) -> str:
        """A configuration file with this admin_listen; its path."""
        path = str(self.mktemp())
        with open(path, "w") as f:
            f.write(f'database = "memory"\nadmin_listen = "{adminListen}"\n')
        return path

    async def command(
        self, *argv: str, config: str | None = None
    ) -> tuple[int, str, str]:
        """Run presence-ctl in this process; its status, output and errors."""
        out, err = io.StringIO(), io.StringIO()
        parsed = options("--config", config or self.config, *argv)
        status = await run(parsed, reactor, out, err)
        return status, out.getvalue(), err.getvalue()

    async def ua(self, user: str) -> SocketUA:
        """A started user agent over UDP, closed and checked at cleanup."""
        agent = SocketUA(reactor, user, self.udpPort)
        await agent.start()
        self.addCleanup(lambda: self.assertEqual(agent.errors, []))
        self.addCleanup(agent.close)
        return agent

    async def test_show(self) -> None:
        """Show prints the presentity's publications, subscriptions, watchers."""
        bob = await self.ua("bob")
        alice = await self.ua("alice")
        published = await bob.publish(pidf("open"))
        await alice.subscribe("sip:bob@example.com")
        await alice.notify()
        status, text, errors = await self.command("show", "sip:bob@example.com")
        self.assertEqual((status, errors), (0, ""))
        lines = text.splitlines()
        self.assertEqual(lines[0], "sip:bob@example.com")
        self.assertEqual(lines[1], "publications: 1")
        self.assertIn(f"presence etag={published.header('sip-etag')}", lines[2])
        self.assertEqual(lines[3], "subscriptions: 1")
        self.assertIn("presence <- sip:alice@example.com active expires in", lines[4])
        self.assertIn("transport=UDP", lines[4])
        self.assertEqual(lines[5], "watchers: 1")
        self.assertEqual(lines[6], "  presence <- sip:alice@example.com active")
        status, text, _ = await self.command("show", "nobody@example.com")
        self.assertEqual(status, 0)
        self.assertIn("publications: 0\nsubscriptions: 0\nwatchers: 0\n", text)

    async def test_subscriptionsPageThroughAll(self) -> None:
        """Subscriptions lists every one, over more than one page."""
        for n in range(2500):
            await self.server.stack.store.putSubscription(carolSubscription(n))
        status, text, _ = await self.command("subscriptions")
        self.assertEqual(status, 0)
        lines = text.splitlines()
        self.assertEqual(lines[-1], "2500 subscriptions")
        self.assertEqual(len(set(lines[:-1])), 2500)
        self.assertTrue(lines[0].startswith("sip:carol@example.com presence <- sip:w0"))
        status, text, _ = await self.command("subscriptions", "--event", "dialog")
        self.assertEqual((status, text), (0, "0 subscriptions\n"))

    async def test_refreshWatchers(self) -> None:
        """refresh-watchers has the server notify the watchers again."""
        bob = await self.ua("bob")
        alice = await self.ua("alice")
        await bob.publish(pidf("open"))
        await alice.subscribe("sip:bob@example.com")
        await alice.notify()
        status, text, _ = await self.command(
            "refresh-watchers", "sip:bob@example.com", "--type", "0"
        )
        self.assertEqual(
            (status, text),
            (0, "refreshed sip:bob@example.com presence (type 0): 1 subscriptions\n"),
        )
        notify = await alice.notify()
        self.assertEqual(notify.callId, alice.callId)

    async def test_faultIsOneLine(self) -> None:
        """A fault is one line on stderr and exit status 1."""
        status, text, errors = await self.command(
            "refresh-watchers", "sip:bob@example.com", "--event", "nope"
        )
        self.assertEqual((status, text), (1, ""))
        self.assertEqual(len(errors.splitlines()), 1)
        self.assertIn("the server refused: refreshWatchers:", errors)
        self.assertIn("unknown event package 'nope'", errors)
        self.assertIn("(fault 400)", errors)

    async def test_stats(self) -> None:
        """Stats prints every counter, or those asked for."""
        bob = await self.ua("bob")
        await bob.publish(pidf("open"))
        status, text, _ = await self.command("stats")
        self.assertEqual(status, 0)
        self.assertIn("requests:PUBLISH:200 = 1\n", text)
        self.assertIn("publications:presence = 1\n", text)
        self.assertIn("xcap:fetches = 0\n", text)
        status, text, _ = await self.command("stats", "requests:")
        self.assertEqual((status, text), (0, "requests:PUBLISH:200 = 1\n"))

    async def test_serverStopped(self) -> None:
        """Against a stopped server: one line saying so, and exit status 1."""
        port = await unusedTCPPort(reactor)
        config = self.writeConfig(f"tcp:{port}:interface=127.0.0.1")
        for argv in [("stats",), ("show", "sip:bob@example.com"), ("subscriptions",)]:
            status, text, errors = await self.command(*argv, config=config)
            self.assertEqual((status, text), (1, ""))
            self.assertEqual(
                errors,
                "presence-ctl: cannot reach the presence server at"
                f" http://127.0.0.1:{port}/RPC2: connection refused\n",
            )

    def test_noAdminSite(self) -> None:
        """A server configured without an admin site: a usage error saying so."""
        config = self.writeConfig("none")
        with self.assertRaises(usage.UsageError) as caught:
            options("--config", config, "stats")
        self.assertIn("admin_listen is none", str(caught.exception))
        parsed = options(
            "--config", config, "--url", "http://127.0.0.1:1/RPC2", "stats"
        )
        self.assertEqual(parsed["url"], "http://127.0.0.1:1/RPC2")


class ConsoleScriptTests(SynchronousTestCase):
    """The presence-ctl console script against a stopped server."""

    def test_exitStatus(self) -> None:
        """It prints one line to stderr and exits with status 1."""
        # A loopback port that was free a moment ago; nothing listens there.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('database = "memory"\n')
            f.write(f'admin_listen = "tcp:{port}:interface=127.0.0.1"\n')
        done = subprocess.run(
            [sys.executable, "-m", "presence.ctl", "--config", path, "stats"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(done.returncode, 1)
        self.assertEqual(done.stdout, "")
        self.assertEqual(
            done.stderr,
            "presence-ctl: cannot reach the presence server at"
            f" http://127.0.0.1:{port}/RPC2: connection refused\n",
        )


class AdminPasswordTests(TestCase):
    """An administration site with admin_password asks every call for it."""

    timeout = 30

    async def setUp(self) -> None:  # type: ignore[override]  # trial awaits it
        """A server whose site wants admin/s3cret."""
        path = FilePath(self.mktemp())
        path.setContent(b'database = "memory"\nadmin_password = "s3cret"\n')
        started = await startServerWithAdmin(reactor, "--config", path.path)
        self.server, _, _, self.adminPort, connections = started
        self.addCleanup(self.server.stopService)
        self.addCleanup(connections.whenClosed)

    def writeConfig(self, extra: str) -> str:
        """A configuration file naming the site, with ``extra`` settings."""
        path = str(self.mktemp())
        with open(path, "w") as f:
            f.write(
                'database = "memory"\n'
                f'admin_listen = "tcp:{self.adminPort}:interface=127.0.0.1"\n' + extra
            )
        return path

    async def command(self, config: str, *argv: str) -> tuple[int, str, str]:
        """Run presence-ctl in this process; its status, output and errors."""
        out, err = io.StringIO(), io.StringIO()
        status = await run(options("--config", config, *argv), reactor, out, err)
        return status, out.getvalue(), err.getvalue()

    async def test_withoutCredentials401(self) -> None:
        """A call without credentials, or with wrong ones, gets HTTP 401."""
        http = HTTPClient(Agent(reactor))
        url = f"http://127.0.0.1:{self.adminPort}/RPC2"
        body = xmlrpc.client.dumps((), "get_statistics").encode()
        for headers in (
            {},
            {"Authorization": ["Basic " + base64.b64encode(b"admin:no").decode()]},
            {"Authorization": ["Basic " + base64.b64encode(b"root:s3cret").decode()]},
        ):
            response = await http.post(url, data=body, headers=Headers(headers))
            self.assertEqual(response.code, 401)
            self.assertEqual(
                response.headers.getRawHeaders("www-authenticate"),
                ['Basic realm="presence admin"'],
            )
            await response.content()
        response = await http.get(f"http://127.0.0.1:{self.adminPort}/metrics")
        self.assertEqual(response.code, 401)
        await response.content()

    async def test_ctlSendsTheConfiguredOnes(self) -> None:
        """presence-ctl reads admin_user/admin_password from the same file."""
        status, text, _ = await self.command(
            self.writeConfig('admin_password = "s3cret"\n'), "stats", "xcap:"
        )
        self.assertEqual((status, text), (0, "xcap:fetches = 0\n"))
        status, text, errors = await self.command(
            self.writeConfig('admin_password = "wrong"\n'), "stats"
        )
        self.assertEqual((status, text), (1, ""))
        self.assertIn("refused the admin_user and admin_password", errors)
