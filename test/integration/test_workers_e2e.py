"""``workers = 2`` end to end: two real worker processes on one PostgreSQL.

The parent (`presence.workers.SupervisorService`) runs in the test's
process; its workers are real ``twistd presence`` processes on the sockets
it bound (``SO_REUSEPORT``, one UDP port for both). Watchers subscribe from
different source ports until both workers own some of the subscriptions
(the ``sharing_tag`` of each row, the worker's cluster id); one worker is
killed with SIGKILL, the parent restarts it, and a PUBLISH afterwards
reaches every watcher, those of the killed worker included (RFC 6665
section 4.2.2: the notifier sends a NOTIFY when the state changes), through
the survivor that took them over or through the worker come back.

Every wait is on a condition, polled a bounded number of times with
generous bounds: the machine may be loaded.
"""

from __future__ import annotations

import io
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase

from presence.ctl import Options as CtlOptions
from presence.ctl import run
from presence.tap import Options, makeService
from presence.testing import pidf
from presence.workers import SupervisorService
from test.support.postgres import NO_PG, PG_DSN, PostgresDatabase
from test.support.sockets import SocketUA

#: Seconds between two polls of a condition, and the most polls.
POLL: float = 0.25
POLLS: int = 480

#: The most watchers subscribed, waiting for both workers to own some: each
#: lands on either worker by the kernel's hash of its source port, so all
#: of them on one worker has a chance of 2 ** -39.
MAX_WATCHERS = 40

#: A user agent's wait for a response or a NOTIFY, in seconds.
UA_TIMEOUT = 30.0


class WorkersEndToEndTests(TestCase):
    """Two workers serve, one is killed and restarted, NOTIFYs keep coming."""

    timeout = 400

    async def setUp(self) -> None:  # type: ignore[override]  # trial awaits it
        """A database, its schema, and the parent started with 2 workers."""
        if PG_DSN is None:
            raise SkipTest(NO_PG)
        self.database = PostgresDatabase()
        self.addCleanup(self.database.drop)
        self.writeConfig()
        options = CtlOptions()
        options.parseOptions(["--config", self.config, "db", "init"])
        self.assertEqual(await run(options, reactor, io.StringIO()), 0)
        serverOptions = Options()
        serverOptions.parseOptions(["--config", self.config])
        parent = makeService(serverOptions, reactor)
        assert isinstance(parent, SupervisorService)
        self.parent = parent
        parent.startService()
        self.addCleanup(parent.stopService)
        self.port = parent.ports["udp:0:interface=127.0.0.1"]
        self.ids = [parent.spec(1).serverId, parent.spec(2).serverId]
        await self.waitFor(
            lambda: self.heartbeats().keys() >= set(self.ids),
            "both workers in the cluster table",
        )

    def writeConfig(self) -> None:
        """The parent's (and the workers') configuration file."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.config = os.path.join(directory, "presence.toml")
        with open(self.config, "w") as f:
            f.write(
                'listen = ["udp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1"]\n'
                'domain = ["example.com"]\n'
                f'database = "{self.database.url}"\n'
                "fallback2db = true\n"
                "workers = 2\n"
                "node_timeout = 2\n"
                'admin_listen = "none"\n'
                # Each watcher is a new source port: no rate limit here.
                "source_rate_limit = 0\n"
            )

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Rows of a query on the test database."""
        import psycopg2

        connection = psycopg2.connect(self.database.dsn)
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, args)
                return list(cursor.fetchall())
        finally:
            connection.close()

    def heartbeats(self) -> dict[str, float]:
        """Each member's last heartbeat."""
        import psycopg2.errors

        try:
            rows = self.query("SELECT server_id, last_seen FROM cluster")
        except psycopg2.errors.UndefinedTable:
            # The first member to join creates it.
            return {}
        return {str(row[0]): float(row[1]) for row in rows}

    async def waitFor(self, condition: Callable[[], bool], what: str) -> None:
        """Poll ``condition`` until it holds; fail after `POLLS` polls."""
        for _ in range(POLLS):
            if condition():
                return
            await deferLater(reactor, POLL, lambda: None)
        self.fail(f"never happened: {what}")

    async def ua(self, user: str) -> SocketUA:
        """A user agent on a socket of its own (its own source port)."""
        agent = SocketUA(reactor, user, self.port, "UDP", timeout=UA_TIMEOUT)
        await agent.start()
        self.addCleanup(agent.close)
        return agent

    async def subscribeOnBoth(self) -> list[tuple[SocketUA, str]]:
        """Watchers of alice, until both workers own some; with their owners."""
        presentity = "sip:alice@example.com"
        watchers: list[tuple[SocketUA, str]] = []
        for n in range(MAX_WATCHERS):
            watcher = await self.ua(f"watcher{n}")
            response = await watcher.subscribe(presentity)
            for _ in range(POLLS):
                if response.code != 503:
                    break
                # A worker joins the cluster before its store has opened,
                # and answers 503 until it has (RFC 3261 21.5.4): a new
                # SUBSCRIBE from the same source port, once it is ready.
                await deferLater(reactor, POLL, lambda: None)
                response = await watcher.subscribe(presentity)
            self.assertEqual(response.code, 200)
            # RFC 6665 section 4.2.1: the notifier sends a NOTIFY at once.
            await watcher.notify()
            [(owner,)] = self.query(
                "SELECT sharing_tag FROM active_watchers WHERE callid = %s",
                watcher.callId,
            )
            watchers.append((watcher, str(owner)))
            if {o for _, o in watchers} == set(self.ids):
                break
        self.assertEqual({o for _, o in watchers}, set(self.ids))
        return watchers

    async def publishReachesAll(
        self, watchers: list[tuple[SocketUA, str]], note: str
    ) -> None:
        """A PUBLISH of alice's; every watcher gets a NOTIFY carrying it."""
        alice = await self.ua("alice")
        published = await alice.publish(pidf(user="alice", note=note))
        self.assertEqual(published.code, 200)
        for watcher, owner in watchers:
            for _ in range(5):
                notify = await watcher.notify()
                if note.encode() in notify.body:
                    break
            else:
                self.fail(f"{watcher.user} (owned by {owner}) never saw {note!r}")
            self.assertEqual(watcher.errors, [])

    def kill(self, index: int) -> int:
        """SIGKILL worker ``index``; return its pid."""
        supervisor = self.parent.supervisor
        assert supervisor is not None
        pid = supervisor.workers[index].pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        return pid

    async def waitRestarted(self, index: int, killed: int) -> None:
        """Until worker ``index`` runs again, as a new process."""
        supervisor = self.parent.supervisor
        assert supervisor is not None
        await self.waitFor(
            lambda: (
                index in supervisor.workers
                and supervisor.workers[index].pid not in (None, killed)
            ),
            f"worker {index} restarted",
        )
        self.assertEqual(supervisor.restarts, {index: 1})

    async def settled(self, since: float) -> None:
        """Both members beat after ``since``, the survivor twice more after.

        A take-over decided on a heartbeat from before a restart is done
        once the survivor has beaten twice since.
        """
        await self.waitFor(
            lambda: min(self.heartbeats().get(i, 0) for i in self.ids) > since,
            "both workers' heartbeats",
        )
        back = self.heartbeats()[self.ids[1]]
        await self.waitFor(
            lambda: self.heartbeats()[self.ids[0]] > back + 1.0,
            "the survivor's heartbeats after the restart",
        )

    async def test_killedWorkerRestarted(self) -> None:
        """Both own subscriptions; one killed and restarted; a PUBLISH reaches all.

        The worker comes back within ``node_timeout`` (a restart takes a
        second or two) or after it, its subscriptions then taken over by the
        survivor: either way every watcher is notified.
        """
        watchers = await self.subscribeOnBoth()
        supervisor = self.parent.supervisor
        assert supervisor is not None
        survivor = supervisor.workers[1].pid
        killedAt = time.time()
        killed = self.kill(2)
        await self.waitRestarted(2, killed)
        self.assertEqual(supervisor.workers[1].pid, survivor)
        await self.settled(killedAt)
        await self.publishReachesAll(watchers, "after the kill")
        owners = {
            str(row[0])
            for row in self.query("SELECT DISTINCT sharing_tag FROM active_watchers")
        }
        self.assertLessEqual(owners, set(self.ids))

    async def test_takenOverMeanwhile(self) -> None:
        """Killed, it stays away past node_timeout: the survivor notifies.

        The restart is held back (a longer first delay) until the survivor
        has taken every subscription of the killed worker; a PUBLISH then
        reaches every watcher, and again once the worker is back (under its
        id, it sends nothing for what it lost).
        """
        watchers = await self.subscribeOnBoth()
        supervisor = self.parent.supervisor
        assert supervisor is not None
        supervisor.firstDelay = 3600.0
        victimId = self.ids[1]
        killed = self.kill(2)
        await self.waitFor(
            lambda: (
                not self.query(
                    "SELECT 1 FROM active_watchers WHERE sharing_tag = %s", victimId
                )
            ),
            "the survivor took the killed worker's subscriptions",
        )
        await self.publishReachesAll(watchers, "taken over")
        # Restart it now.
        self.assertTrue(supervisor.restartNow(2))
        restartedAt = time.time()
        await self.waitRestarted(2, killed)
        await self.settled(restartedAt)
        await self.publishReachesAll(watchers, "back again")
