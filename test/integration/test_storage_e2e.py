"""Persistence end to end over real sockets.

Restart on SQLite, several servers sharing one PostgreSQL (fallback2db), and database
outages.

The tests wait for what signals the step they need (the store loaded, the
cache flushed, the database reachable again, a NOTIFY or a response), never
for a length of time; rows are aged by the servers' own clock.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import TestCase

from presence.storage.postgres import PostgresStore
from presence.storage.sqlite import SQLiteStore
from presence.tap import StackService
from presence.testing import pidf
from test.support.postgres import (
    PostgresPerClass,
    pgAddress,
    pgURL,
)
from test.support.proxy import CuttableProxy
from test.support.records import aliceSubscription
from test.support.sockets import SocketUA, startServer

BOB = "sip:bob@example.com"


class ServerTestCase(TestCase):
    """Starts servers and user agents, and cleans them up."""

    timeout = 40

    def configFile(self, **settings: Any) -> str:
        """A TOML configuration file with ``settings``."""
        path = str(self.mktemp())
        with open(path, "w") as f:
            for key, value in settings.items():
                if isinstance(value, str):
                    f.write(f'{key} = "{value}"\n')
                elif isinstance(value, bool):
                    f.write(f"{key} = {'true' if value else 'false'}\n")
                else:
                    f.write(f"{key} = {value}\n")
        return path

    async def server(self, *argv: str, stop: bool = True) -> tuple[StackService, int]:
        """Start a server; wait until it serves; return it and its UDP port.

        It serves from the database: open, and in cache mode every row loaded.
        """
        server, udpPort, _ = startServer(reactor, *argv)
        if stop:
            self.addCleanup(lambda: server.running and server.stopService())
        await server.stack.storage.whenLoaded()
        self.assertTrue(server.stack.storage.serving)
        return server, udpPort

    async def ua(self, user: str, port: int) -> SocketUA:
        """A started user agent on UDP."""
        agent = SocketUA(reactor, user, port)
        await agent.start()
        self.addCleanup(agent.close)
        return agent


class RestartTests(ServerTestCase):
    """Cache mode on SQLite: a restart loses nothing."""

    def setUp(self) -> None:
        """A database file for the test."""
        directory = self.mktemp()
        os.makedirs(directory)
        self.database = f"sqlite:{directory}/presence.sqlite"

    async def test_cleanRestart(self) -> None:
        """After a clean stop and a new start on the same database.

        The old entity tag refreshes and the old dialog refreshes, and the
        watcher's next NOTIFY has the next CSeq.
        """
        server, port = await self.server("--database", self.database)
        bob = await self.ua("bob", port)
        alice = await self.ua("alice", port)
        published = await bob.publish(pidf("open"))
        etag = published.header("sip-etag")
        assert etag is not None
        self.assertEqual((await alice.subscribe(BOB)).code, 200)
        first = await alice.notify()
        await server.stopService()

        _, port = await self.server("--database", self.database)
        bob.serverPort = alice.serverPort = port
        refreshed = await bob.publish(etag=etag)
        self.assertEqual(refreshed.code, 200)
        again = await alice.subscribe()
        self.assertEqual(again.code, 200)
        notify = await alice.notify()
        self.assertEqual(notify.cseq.number, first.cseq.number + 1)
        self.assertIn(b"<basic>open</basic>", notify.body)
        self.assertEqual(notify.toAddr.tag, alice.tag)

    async def test_crashLosesAtMostOnePeriod(self) -> None:
        """A server dying without a flush loses only what changed since then.

        The watcher's dialog survives, and its next NOTIFY still has a CSeq
        above every one it got (RFC 3261 12.2.2 makes it reject lower ones).
        """
        config = self.configFile(database=self.database, db_update_period=0.2)
        server, port = await self.server("--config", config, stop=False)
        bob = await self.ua("bob", port)
        alice = await self.ua("alice", port)
        etag = (await bob.publish(pidf("open"))).header("sip-etag")
        self.assertEqual((await alice.subscribe(BOB)).code, 200)
        await alice.notify()
        store: Any = server.stack.store
        # The periodic flush writes all of it.
        await store.whenFlushed()
        # Die: the listeners go, the database closes, nothing is flushed.
        self.assertEqual((await bob.publish(pidf("closed"), etag)).code, 200)
        unflushed = await alice.notify()
        for child in list(server):
            await defer.maybeDeferred(child.stopService)
        server.stack.transactions.stop()
        await server.stack.storage.abort()

        _, port = await self.server("--config", config)
        bob.serverPort = alice.serverPort = port
        self.assertEqual((await bob.publish(etag=etag)).code, 200)
        self.assertEqual((await alice.subscribe()).code, 200)
        resumed = await alice.notify()
        self.assertGreater(resumed.cseq.number, unflushed.cseq.number)


class PostgresServerTestCase(PostgresPerClass, ServerTestCase):
    """A PostgreSQL database of its own for each test class."""

    async def reader(self, dsn: str | None = None) -> PostgresStore:
        """A store reading the class's database directly."""
        store = PostgresStore(dsn or self.pg.dsn, reactor=reactor)
        await store.start()
        self.addCleanup(store.stop)
        return store

    async def empty(self) -> None:
        """Delete every row of the class's database."""
        store = await self.reader()
        await store.ensureSchema(create=True)
        assert store.runner is not None
        await store.runner.runInteraction(
            [
                (f"DELETE FROM {table}", {})
                for table in ("presentity", "active_watchers", "watchers", "location")
            ]
        )


class SharedModeTests(PostgresServerTestCase):
    """Two servers in shared mode on one PostgreSQL behave as one."""

    async def setUp(self) -> None:  # type: ignore[override]  # trial awaits it
        """Start servers A and B on the class's database, emptied."""
        await self.empty()
        args = ("--database", self.pg.url, "--fallback2db")
        self.a, self.aPort = await self.server(*args)
        self.b, self.bPort = await self.server(*args)

    async def test_valueTooLongGets400(self) -> None:
        """A SUBSCRIBE whose Call-ID the database cannot store gets 400.

        Shared mode writes at once, after the 2xx of an initial SUBSCRIBE:
        values longer than their columns are refused before anything is
        answered or stored, and the server keeps serving.
        """
        alice = await self.ua("alice", self.aPort)
        response = await alice.subscribe(BOB, callId="c" * 300 + "@127.0.0.1")
        self.assertEqual(
            (response.code, response.phrase),
            (400, "callid longer than 255 characters"),
        )
        self.assertEqual((await alice.subscribe(BOB)).code, 200)

    async def test_publishAtAReachesWatcherAtB(self) -> None:
        """A PUBLISH at server A is notified to a watcher that subscribed at B."""
        alice = await self.ua("alice", self.bPort)
        bob = await self.ua("bob", self.aPort)
        self.assertEqual((await alice.subscribe(BOB)).code, 200)
        first = await alice.notify()
        self.assertEqual((await bob.publish(pidf("open"))).code, 200)
        update = await alice.notify()
        self.assertIn(b"<basic>open</basic>", update.body)
        self.assertEqual(update.cseq.number, first.cseq.number + 1)

    async def test_refreshAndEndAtEither(self) -> None:
        """A refresh at B and an unsubscribe at A work in a dialog made at A."""
        alice = await self.ua("alice", self.aPort)
        self.assertEqual((await alice.subscribe(BOB)).code, 200)
        first = await alice.notify()
        alice.serverPort = self.bPort
        self.assertEqual((await alice.subscribe()).code, 200)
        second = await alice.notify()
        alice.serverPort = self.aPort
        self.assertEqual((await alice.subscribe(expires=0)).code, 200)
        last = await alice.notify()
        self.assertEqual(
            [second.cseq.number, last.cseq.number],
            [first.cseq.number + 1, first.cseq.number + 2],
        )
        self.assertTrue(
            (last.header("subscription-state") or "").startswith("terminated")
        )

    async def test_concurrentPublishes(self) -> None:
        """PUBLISHes to both servers at once.

        The watcher's NOTIFY CSeqs are unique and without gaps.
        """
        alice = await self.ua("alice", self.aPort)
        self.assertEqual((await alice.subscribe(BOB)).code, 200)
        first = await alice.notify()
        desk = await self.ua("bob", self.aPort)
        phone = await self.ua("bob", self.bPort)
        etags: dict[int, str | None] = {}
        for round in range(5):
            responses = []
            for n, agent in enumerate((desk, phone)):
                # Both PUBLISHes are under way before either is answered.
                responses.append(
                    defer.Deferred.fromCoroutine(
                        agent.publish(pidf("open", f"t{n}", f"r{round}"), etags.get(n))
                    )
                )
            for n, pending in enumerate(responses):
                response = await pending
                self.assertEqual(response.code, 200)
                etags[n] = response.header("sip-etag")
        # Every NOTIFY up to the one with both last publications, then the
        # rest: a server still sending has a NOTIFY outstanding until alice
        # answers it (an OPTIONS answered would prove nothing: it needs no
        # database and overtakes a NOTIFY whose CSeq is already taken).
        cseqs = []
        while True:
            notify = await alice.notify()
            cseqs.append(notify.cseq.number)
            if notify.body.count(b"<note>r4</note>") == 2:
                break
        servers = (self.a.stack.notifier, self.b.stack.notifier)
        while any(n.outstanding for n in servers) or alice.notifications.pending:
            if alice.notifications.pending:
                cseqs.append((await alice.notify()).cseq.number)
            else:
                await task.deferLater(reactor, 0, lambda: None)
        self.assertEqual(len(cseqs), len(set(cseqs)))
        self.assertEqual(
            sorted(cseqs), list(range(first.cseq.number + 1, max(cseqs) + 1))
        )

    async def test_expiryRacedByBoth(self) -> None:
        """An expired subscription is ended, with one final NOTIFY.

        By exactly one of the servers, though both sweep it at once (and
        each on its own once a second).
        """
        alice = await self.ua("alice", self.aPort)
        self.assertEqual((await alice.subscribe(BOB)).code, 200)
        await alice.notify()
        store = await self.reader()
        assert store.runner is not None
        sweepers = [self.a.stack.sweeper, self.b.stack.sweeper]
        # Expired a second ago by the clock the servers sweep with.
        now = sweepers[0].clock.seconds()
        await store.runner.runOperation(
            "UPDATE active_watchers SET expires = :expires", {"expires": int(now) - 1}
        )
        await defer.gatherResults(
            [defer.Deferred.fromCoroutine(sweeper.sweep()) for sweeper in sweepers]
        )
        final = await alice.notify()
        self.assertTrue(
            (final.header("subscription-state") or "").startswith("terminated")
        )
        self.assertEqual(sum(s.expired["subscriptions"] for s in sweepers), 1)
        # Whatever either server sent before answering has arrived.
        for port in (self.aPort, self.bPort):
            alice.serverPort = port
            self.assertEqual((await alice.ping()).code, 200)
        self.assertEqual(alice.notifications.pending, [])


class OutageTests(PostgresServerTestCase):
    """The database lost while the server runs, through a proxy we can cut."""

    async def setUp(self) -> None:  # type: ignore[override]  # trial awaits it
        """A proxy in front of the class's database, emptied."""
        await self.empty()
        self.proxy = CuttableProxy(*pgAddress())
        tcp: Any = reactor
        self.port: IListeningPort = tcp.listenTCP(0, self.proxy, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.addCleanup(self.proxy.cut)
        self.dsn = pgURL(
            dbname=self.pg.name,
            host="127.0.0.1",
            port=str(self.port.getHost().port),
        )

    async def test_cacheModeLosesNothing(self) -> None:
        """Cache mode serves while the database is gone, then writes it all."""
        config = self.configFile(database=self.dsn, db_update_period=0.2)
        server, port = await self.server("--config", config)
        bob = await self.ua("bob", port)
        alice = await self.ua("alice", port)
        etag = (await bob.publish(pidf("open"))).header("sip-etag")
        store: Any = server.stack.store
        await store.whenFlushed()
        self.proxy.cut()
        modified = await bob.publish(pidf("closed"), etag)
        self.assertEqual(modified.code, 200)
        self.assertEqual((await alice.subscribe(BOB)).code, 200)
        await alice.notify()
        # A flush while the database is gone writes nothing and keeps it all.
        self.assertEqual(await server.stack.storage.flush(), 0)
        self.assertGreater(store.pending, 0)
        self.proxy.refusing = False
        # The periodic flush writes it all once the database is back.
        await store.whenFlushed()
        rows = await (await self.reader()).loadAll()
        publications, subscriptions = rows[0], rows[1]
        self.assertEqual([p.etag for p in publications], [modified.header("sip-etag")])
        self.assertEqual([s.callId for s in subscriptions], [alice.callId])

    async def test_sharedModeAnswers503AndRecovers(self) -> None:
        """Shared mode answers 503 with Retry-After while the database is gone.

        And serves again by itself when it is back.
        """
        server, port = await self.server("--database", self.dsn, "--fallback2db")
        database = server.stack.storage.database
        bob = await self.ua("bob", port)
        self.assertEqual((await bob.publish(pidf("open"))).code, 200)
        self.proxy.cut()
        refused = await bob.publish(pidf("open"))
        self.assertEqual(refused.code, 503)
        self.assertIsNotNone(refused.header("retry-after"))
        self.assertFalse(database.ready)
        self.assertEqual((await bob.publish(pidf("open"))).code, 503)
        self.proxy.refusing = False
        # The store's own probe finds the database again.
        await database.whenReady()
        self.assertEqual((await bob.publish(pidf("open"))).code, 200)


class _RawDatagrams(DatagramProtocol):
    """Queues the datagrams it receives, unparsed."""

    def __init__(self) -> None:
        self.queue: defer.DeferredQueue[bytes] = defer.DeferredQueue()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.queue.put(datagram)


class BadBytesMixin:
    """Bad bytes over a real socket never cost anybody's data."""

    async def serverAndDatabase(self) -> tuple[StackService, int, Any]:
        """A server in cache mode; a store reading its database directly."""
        raise NotImplementedError

    def badRequest(self, ua: SocketUA, method: str, callId: bytes) -> bytes:
        """A request whose Call-ID and User-Agent hold bytes that are not UTF-8."""
        data, _ = ua.build(method, BOB, [("Event", "presence"), ("Expires", "600")])
        data = data.replace(b"Call-ID: ", b"Call-ID: " + callId, 1)
        return data.replace(
            b"\r\n\r\n", b"\r\nUser-Agent: ph\xe9ne \xff\xfe\r\n\r\n", 1
        )

    async def test_notUTF8Refused(self) -> None:
        """Headers that are not UTF-8 get 400; a publication right after is stored.

        RFC 3261 section 25.1: the grammar's text is UTF-8 (``UTF8-NONASCII``);
        bytes that are not UTF-8 are valid nowhere in a message.
        """
        case: Any = self
        server, port, reader = await self.serverAndDatabase()
        alice = await case.ua("alice", port)
        bob = await case.ua("bob", port)
        raw = _RawDatagrams()
        socket = reactor.listenUDP(0, raw, interface="127.0.0.1")  # type: ignore[attr-defined]
        case.addCleanup(socket.stopListening)
        for method in ("SUBSCRIBE", "REGISTER", "PUBLISH"):
            socket.write(
                self.badRequest(alice, method, b"\xff\xfe-"), ("127.0.0.1", port)
            )
            # The 400 echoes the Call-ID as it came, bytes and all.
            response = await raw.queue.get()
            case.assertTrue(
                response.startswith(b"SIP/2.0 400 Call-ID header is not valid UTF-8"),
                response[:80],
            )
            case.assertIn(b"Call-ID: \xff\xfe-", response)
        published = await bob.publish(pidf("open"))
        case.assertEqual(published.code, 200)
        flushed: Any = server.stack.store
        await flushed.whenFlushed()
        publications = (await reader.loadAll())[0]
        case.assertEqual([p.etag for p in publications], [published.header("sip-etag")])

    async def test_refusedRowCostsNoOtherRow(self) -> None:
        """A row the database refuses is left out of the flush, nothing else.

        A subscription whose Call-ID is not valid Unicode sits in the cache (it
        cannot come from SIP any more: such a request gets 400); the flush that
        meets it writes every other row, the publication made at the same
        moment included, and logs the one it could not.
        """
        case: Any = self
        server, port, reader = await self.serverAndDatabase()
        store: Any = server.stack.store
        bad = aliceSubscription(
            presentity=BOB,
            callId="\udcff\udcfe@127.0.0.1",
            expires=reactor.seconds() + 600,
        )
        await store.putSubscription(bad)
        bob = await case.ua("bob", port)
        published = await bob.publish(pidf("open"))
        case.assertEqual(published.code, 200)
        await store.whenFlushed()
        publications, subscriptions = (await reader.loadAll())[:2]
        case.assertEqual([p.etag for p in publications], [published.header("sip-etag")])
        case.assertEqual(subscriptions, [])
        case.assertEqual(store.rowsRefused, 1)
        case.assertEqual(store.pending, 0)


class SQLiteBadBytesTests(BadBytesMixin, ServerTestCase):
    """Bad bytes against a server in cache mode on SQLite."""

    async def serverAndDatabase(self) -> tuple[StackService, int, Any]:
        """A server on a SQLite file of its own, and a reader of that file."""
        directory = self.mktemp()
        os.makedirs(directory)
        path = f"{directory}/presence.sqlite"
        config = self.configFile(database=f"sqlite:{path}", db_update_period=0.1)
        server, port = await self.server("--config", config)
        reader = SQLiteStore(path, reactor=reactor)
        await reader.start()
        self.addCleanup(reader.stop)
        return server, port, reader


class PostgresBadBytesTests(BadBytesMixin, PostgresServerTestCase):
    """Bad bytes, and a row PostgreSQL refuses, in cache mode on PostgreSQL."""

    async def serverAndDatabase(self) -> tuple[StackService, int, Any]:
        """A server in cache mode on the class's database, emptied."""
        await self.empty()
        config = self.configFile(database=self.pg.url, db_update_period=0.1)
        server, port = await self.server("--config", config)
        return server, port, await self.reader()
