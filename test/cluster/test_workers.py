"""Tests for presence.workers: ``workers = N``, its settings and its supervisor.

The supervisor runs on `task.Clock` with a fake spawner; the sockets the
parent binds are real (loopback, port 0). The workers over real sockets and
PostgreSQL: ``test/integration/test_workers_e2e.py``.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from twisted.internet import task
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from presence.config import Config, ConfigError, fromMapping
from presence.sip.message import SIPResponse
from presence.sip.parser import parseDatagram
from presence.sip.transport import Peer
from presence.tap import Options, StackService, makeService
from presence.testing import requestBytes, responseBytes
from presence.workers import (
    MAX_SERVER_ID,
    RelayProtocol,
    ResponseRelay,
    Supervisor,
    SupervisorService,
    WorkerSocket,
    WorkerSpec,
    bindAll,
    workerCommand,
    workerServerId,
)

SHARED = {
    "database": "postgresql://postgres@127.0.0.1:5432/presence",
    "fallback2db": True,
}


def options(*argv: str) -> Options:
    """Parse a command line."""
    parsed = Options()
    parsed.parseOptions(list(argv))
    return parsed


class WorkersSettingTests(SynchronousTestCase):
    """The ``workers`` setting: 1 by default, more in shared mode only."""

    def test_default(self) -> None:
        """One process, today's server, in every mode."""
        self.assertEqual(Config().workers, 1)
        self.assertEqual(fromMapping({"workers": 1}).validate().workers, 1)

    def test_sharedPostgres(self) -> None:
        """Above 1 in shared mode on PostgreSQL."""
        config = fromMapping({**SHARED, "workers": 4}).validate()
        self.assertEqual(config.workers, 4)

    def test_needsSharedPostgres(self) -> None:
        """Without fallback2db, or on SQLite, workers above 1 is refused."""
        for mapping in (
            {"database": SHARED["database"], "workers": 2},
            {"database": "sqlite:x.sqlite", "fallback2db": True, "workers": 2},
            {"workers": 2},
        ):
            config = fromMapping(mapping)
            e = self.assertRaises(ConfigError, config.validate)
            self.assertIn("shared mode on PostgreSQL", str(e))

    def test_range(self) -> None:
        """1 to 64, a whole number."""
        for value in (0, -1, 65):
            config = fromMapping({**SHARED, "workers": value})
            self.assertRaises(ConfigError, config.validate)
        self.assertRaises(ConfigError, fromMapping, {"workers": "2"})
        self.assertRaises(ConfigError, fromMapping, {"workers": 2.0})
        self.assertRaises(ConfigError, fromMapping, {"workers": True})

    def test_noTLS(self) -> None:
        """A tls: listener with workers above 1 is refused, with a reason."""
        config = Config(
            listen=("udp:5060", "tls:5061:privateKey=k.pem"),
            database=str(SHARED["database"]),
            fallback2db=True,
            workers=2,
        )
        e = self.assertRaises(ConfigError, config._checkWorkers)
        self.assertIn("tls", str(e))

    def test_option(self) -> None:
        """--workers on the command line; refused at start when not shared."""
        parsed = options(
            "--database", str(SHARED["database"]), "--fallback2db", "--workers", "3"
        )
        self.assertEqual(parsed.config.workers, 3)
        self.assertRaises(usage.UsageError, options, "--workers", "2")

    def test_arguments(self) -> None:
        """The options are kept as given: the workers are started with them."""
        argv = ["--database", str(SHARED["database"]), "--fallback2db"]
        self.assertEqual(options(*argv).arguments, argv)

    def test_badWorkerOption(self) -> None:
        """--worker is the parent's JSON; anything else is a usage error."""
        self.assertRaises(usage.UsageError, options, "--worker", "{")
        self.assertRaises(usage.UsageError, options, "--worker", "[1]")


class ServerIdTests(SynchronousTestCase):
    """Each worker's id in the cluster: ``BASE/INDEX``, stable."""

    def test_suffix(self) -> None:
        """The configured id, or host:port, with the index."""
        self.assertEqual(workerServerId("pres1", 1), "pres1/1")
        self.assertEqual(workerServerId("vm:5060", 12), "vm:5060/12")

    def test_stable(self) -> None:
        """The same base and index give the same id (a restart gets it back)."""
        base = "x" * 40
        self.assertEqual(workerServerId(base, 3), workerServerId(base, 3))

    def test_long(self) -> None:
        """Too long: shortened to 32, index kept, distinct bases stay distinct."""
        one = workerServerId("a" * 40, 2)
        other = workerServerId("a" * 39 + "b", 2)
        self.assertLessEqual(len(one), MAX_SERVER_ID)
        self.assertTrue(one.endswith("/2"))
        self.assertNotEqual(one, other)
        self.assertNotEqual(one, workerServerId("a" * 40, 3))
        self.assertEqual(len(workerServerId("a" * 31, 64)), MAX_SERVER_ID)


class WorkerSpecTests(SynchronousTestCase):
    """What the parent tells a worker, as ``--worker``."""

    spec = WorkerSpec(
        index=2,
        count=3,
        serverId="pres1/2",
        sockets=(
            WorkerSocket("udp:5060", "udp", 7, int(socket.AF_INET), 5060),
            WorkerSocket("tcp:5060", "tcp", 8, int(socket.AF_INET), 5060),
        ),
    )

    def test_roundTrip(self) -> None:
        """What encode writes, decode reads."""
        self.assertEqual(WorkerSpec.decode(self.spec.encode()), self.spec)
        relayed = WorkerSpec(
            1,
            2,
            "pres1/1",
            (),
            WorkerSocket("relay", "udp", 9, int(socket.AF_INET), 7001),
            (7002,),
        )
        self.assertEqual(WorkerSpec.decode(relayed.encode()), relayed)

    def test_bad(self) -> None:
        """Anything else is a ValueError."""
        for text in ("", "{}", '{"index": 1}', "null", '{"index":"x"}'):
            self.assertRaises(ValueError, WorkerSpec.decode, text)

    def test_command(self) -> None:
        """Twistd presence in the foreground, no pid file, the parent's options."""
        command = workerCommand(["--config", "p.toml"], self.spec)
        self.assertIn("--nodaemon", command)
        self.assertIn("--pidfile=", command)
        at = command.index("presence")
        self.assertEqual(
            command[at:],
            ["presence", "--config", "p.toml", "--worker", self.spec.encode()],
        )


class FakeWorker:
    """A worker the fake spawner started."""

    def __init__(self, pid: int, onExit: Callable[[int], None]) -> None:
        """Running as ``pid``; ``onExit`` is the supervisor's."""
        self._pid: int | None = pid
        self.onExit = onExit
        self.signals: list[str] = []

    @property
    def pid(self) -> int | None:
        """The pid, ``None`` once exited."""
        return self._pid

    def signal(self, name: str) -> None:
        """Record the signal."""
        self.signals.append(name)

    def exit(self, status: int) -> None:
        """End, with ``status``."""
        self._pid = None
        self.onExit(status)


class FakeSpawner:
    """Starts `FakeWorker`s, each with a new pid."""

    def __init__(self) -> None:
        """None started yet."""
        self.started: list[tuple[int, FakeWorker]] = []
        self.failing = 0

    def __call__(self, index: int, onExit: Callable[[int], None]) -> FakeWorker:
        """Start one, or fail if told to."""
        if self.failing:
            self.failing -= 1
            raise OSError("cannot fork")
        worker = FakeWorker(1000 + len(self.started), onExit)
        self.started.append((index, worker))
        return worker

    def indexes(self) -> list[int]:
        """The indexes started, in order."""
        return [index for index, _ in self.started]


class SupervisorTests(SynchronousTestCase):
    """The parent's restart logic on a fake clock."""

    def setUp(self) -> None:
        """Two workers, started."""
        self.clock = task.Clock()
        self.spawner = FakeSpawner()
        self.supervisor = Supervisor(self.clock, 2, self.spawner)
        self.supervisor.start()

    def running(self, index: int) -> FakeWorker:
        """The fake worker running as ``index``."""
        worker = self.supervisor.workers[index]
        assert isinstance(worker, FakeWorker)
        return worker

    def test_start(self) -> None:
        """Every worker is started, indexes 1 to N."""
        self.assertEqual(self.spawner.indexes(), [1, 2])
        self.assertEqual(sorted(self.supervisor.workers), [1, 2])

    def test_restart(self) -> None:
        """A worker killed is started again after a second, under its index."""
        self.running(2).exit(-9)
        self.assertNotIn(2, self.supervisor.workers)
        self.clock.advance(0.999)
        self.assertEqual(self.spawner.indexes(), [1, 2])
        self.clock.advance(0.001)
        self.assertEqual(self.spawner.indexes(), [1, 2, 2])
        self.assertEqual(self.running(2).pid, 1002)
        self.assertEqual(self.supervisor.restarts, {2: 1})

    def test_backOff(self) -> None:
        """Quick deaths double the delay, up to 30 s."""
        delays = []
        for _ in range(7):
            self.running(1).exit(1)
            before = len(self.spawner.started)
            waited = 0.0
            while len(self.spawner.started) == before:
                self.clock.advance(0.5)
                waited += 0.5
            delays.append(waited)
        self.assertEqual(delays, [1, 2, 4, 8, 16, 30, 30])

    def test_stableResets(self) -> None:
        """A worker that ran 10 s or more is restarted after 1 s again."""
        for _ in range(3):
            self.running(1).exit(1)
            self.clock.advance(30)
        self.clock.advance(10)
        self.running(1).exit(-9)
        self.clock.advance(1)
        self.assertEqual(self.spawner.indexes().count(1), 5)

    def test_otherUnaffected(self) -> None:
        """One worker's deaths leave the other's process and delay alone."""
        self.running(1).exit(1)
        self.running(2).exit(1)
        self.clock.advance(1)
        self.assertEqual(self.spawner.indexes(), [1, 2, 1, 2])

    def test_restartNow(self) -> None:
        """A restart waiting can be done at once; nothing else is started."""
        self.assertFalse(self.supervisor.restartNow(1))
        self.running(1).exit(1)
        self.assertTrue(self.supervisor.restartNow(1))
        self.clock.advance(0)
        self.assertEqual(self.spawner.indexes(), [1, 2, 1])
        self.assertFalse(self.supervisor.restartNow(1))

    def test_spawnFails(self) -> None:
        """A worker that cannot be started is tried again, with the back-off."""
        self.running(1).exit(1)
        self.spawner.failing = 1
        self.clock.advance(1)
        self.assertNotIn(1, self.supervisor.workers)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.clock.advance(2)
        self.assertIn(1, self.supervisor.workers)

    def test_stop(self) -> None:
        """Stop: SIGTERM to each; fires once all exited; no restart after."""
        workers = {i: self.running(i) for i in (1, 2)}
        stopped = self.supervisor.stop()
        self.assertEqual([w.signals for w in workers.values()], [["TERM"], ["TERM"]])
        workers[1].exit(0)
        self.assertNoResult(stopped)
        workers[2].exit(0)
        self.successResultOf(stopped)
        self.clock.advance(100)
        self.assertEqual(self.spawner.indexes(), [1, 2])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopCancelsRestart(self) -> None:
        """A restart waiting when the parent stops is not done."""
        self.running(1).exit(-9)
        stopped = self.supervisor.stop()
        self.running(2).exit(0)
        self.successResultOf(stopped)
        self.clock.advance(10)
        self.assertEqual(self.spawner.indexes(), [1, 2])

    def test_stopKills(self) -> None:
        """A worker still running 15 s after SIGTERM gets SIGKILL."""
        workers = {i: self.running(i) for i in (1, 2)}
        stopped = self.supervisor.stop()
        workers[1].exit(0)
        self.clock.advance(14.9)
        self.assertEqual(workers[2].signals, ["TERM"])
        self.clock.advance(0.1)
        self.assertEqual(workers[2].signals, ["TERM", "KILL"])
        workers[2].exit(-9)
        self.successResultOf(stopped)


class BindTests(SynchronousTestCase):
    """The parent's sockets: one per worker and address, one port each."""

    def test_sharedPort(self) -> None:
        """Port 0: the first socket's port is every worker's, SO_REUSEPORT."""
        sockets = bindAll(
            [
                ("udp:0:interface=127.0.0.1", "udp", "127.0.0.1", 0),
                ("tcp:0:interface=127.0.0.1", "tcp", "127.0.0.1", 0),
            ],
            3,
        )
        for worker in sockets:
            for _, sock in worker:
                self.addCleanup(sock.close)
        self.assertEqual(len(sockets), 3)
        for transport in (0, 1):
            ports = {worker[transport][0].port for worker in sockets}
            self.assertEqual(len(ports), 1)
            self.assertNotEqual(ports, {0})
        for worker in sockets:
            self.assertEqual([d.transport for d, _ in worker], ["udp", "tcp"])
            for described, sock in worker:
                self.assertEqual(described.fd, sock.fileno())
                self.assertTrue(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT))
                self.assertTrue(sock.get_inheritable())

    def test_failureCloses(self) -> None:
        """A socket that cannot be bound: those bound before are closed."""
        blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(blocker.close)
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        self.assertRaises(
            OSError,
            bindAll,
            [
                ("udp:0", "udp", "127.0.0.1", 0),
                ("tcp", "tcp", "127.0.0.1", port),
            ],
            2,
        )


class MakeServiceTests(SynchronousTestCase):
    """What makeService builds for the parent and for a worker."""

    def test_parent(self) -> None:
        """With workers above 1: the supervisor, no SIP stack."""
        top = makeService(
            options(
                "--database",
                str(SHARED["database"]),
                "--fallback2db",
                "--workers",
                "2",
                "--listen",
                "udp:5070",
            ),
            MemoryReactorClock(),
        )
        self.assertIsInstance(top, SupervisorService)
        self.assertEqual(top.count, 2)
        self.assertEqual(top.addresses, [("udp:5070", "udp", "", 5070)])
        self.assertIn("--fallback2db", top.arguments)

    def worker(self, index: int) -> StackService:
        """The service tree of worker ``index`` of 2."""
        spec = WorkerSpec(
            index,
            2,
            f"pres1/{index}",
            (
                WorkerSocket("udp:5070", "udp", 40, int(socket.AF_INET), 5070),
                WorkerSocket("tcp:5070", "tcp", 41, int(socket.AF_INET), 5070),
            ),
            relay=WorkerSocket("relay", "udp", 42, int(socket.AF_INET), 7001),
            siblings=(7002,),
        )
        top = makeService(
            options(
                "--database",
                str(SHARED["database"]),
                "--fallback2db",
                "--workers",
                "2",
                "--listen",
                "udp:5070",
                "--listen",
                "tcp:5070",
                "--worker",
                spec.encode(),
            ),
            MemoryReactorClock(),
        )
        assert isinstance(top, StackService)
        return top

    def test_worker(self) -> None:
        """A worker: the stack on its parent's sockets, under its id."""
        top = self.worker(1)
        self.assertEqual(top.stack.cluster.serverId, "pres1/1")
        names = [c.name for c in top]
        self.assertIn("udp:5070", names)
        self.assertIn("tcp:5070", names)
        self.assertIn("admin", names)
        self.assertIn("relay", names)
        sink = top.stack.transports.sink
        assert isinstance(sink, ResponseRelay)
        self.assertEqual(sink.siblings, (7002,))
        self.assertIs(sink.transactions, top.stack.transactions)

    def test_adminInFirstOnly(self) -> None:
        """Only worker 1 has the administration site."""
        top = self.worker(2)
        self.assertEqual(top.stack.cluster.serverId, "pres1/2")
        self.assertNotIn("admin", [c.name for c in top])


class FakeTransactions:
    """A transaction layer with some client transactions, recording input."""

    def __init__(self, *keys: tuple[str, str]) -> None:
        """Waiting for responses of these (branch, method)."""
        self.client = dict.fromkeys(keys)
        self.received: list[tuple[Any, Any]] = []

    def messageReceived(self, message: Any, peer: Any) -> None:
        """Record."""
        self.received.append((message, peer))

    def malformedReceived(self, error: Any, peer: Any) -> None:
        """Record."""
        self.received.append((error, peer))


class FakePort:
    """A UDP port recording what is written."""

    def __init__(self) -> None:
        """Nothing written yet."""
        self.written: list[tuple[bytes, tuple[str, int]]] = []

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        """Record."""
        self.written.append((data, addr))


VIA = "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKmine"


class RelayTests(SynchronousTestCase):
    """UDP responses another worker awaits go on to it."""

    def setUp(self) -> None:
        """A relay for a worker with one NOTIFY outstanding, two siblings."""
        self.transactions = FakeTransactions(("z9hG4bKmine", "NOTIFY"))
        self.relay = ResponseRelay(self.transactions, [7001, 7002])
        self.port = FakePort()
        self.relay.port = self.port
        self.peer = Peer("UDP", "192.0.2.7", 5062)

    def test_ownResponse(self) -> None:
        """A response this worker awaits is handed on, not relayed."""
        response = parseDatagram(responseBytes(200, VIA))
        self.relay.messageReceived(response, self.peer)
        self.assertEqual(self.port.written, [])
        self.assertEqual(self.transactions.received, [(response, self.peer)])

    def test_strayRelayed(self) -> None:
        """A response for another worker's NOTIFY goes to every sibling."""
        via = VIA.replace("mine", "theirs")
        response = parseDatagram(responseBytes(200, via))
        self.relay.messageReceived(response, self.peer)
        self.assertEqual(
            [addr for _, addr in self.port.written],
            [("127.0.0.1", 7001), ("127.0.0.1", 7002)],
        )
        relayed = parseDatagram(self.port.written[0][0])
        assert isinstance(relayed, SIPResponse)
        self.assertEqual(relayed.topVia.branch, "z9hG4bKtheirs")
        self.assertEqual(self.relay.relayed, 1)
        self.assertEqual(len(self.transactions.received), 1)

    def test_requestsAndStreamsNotRelayed(self) -> None:
        """Requests, and responses over TCP, are never relayed."""
        self.relay.messageReceived(parseDatagram(requestBytes()), self.peer)
        via = VIA.replace("mine", "theirs").replace("UDP", "TCP")
        tcp = Peer("TCP", "192.0.2.7", 5062)
        self.relay.messageReceived(parseDatagram(responseBytes(200, via)), tcp)
        self.assertEqual(self.port.written, [])
        self.assertEqual(len(self.transactions.received), 2)

    def test_relayReceives(self) -> None:
        """Relayed responses from siblings reach the transaction layer, once."""
        relay = RelayProtocol(self.transactions, [7001])
        data = responseBytes(200, VIA)
        relay.datagramReceived(data, ("127.0.0.1", 7001))
        [(message, peer)] = self.transactions.received
        self.assertIsInstance(message, SIPResponse)
        self.assertEqual((peer.transport, peer.port), ("UDP", 7001))

    def test_relayRefuses(self) -> None:
        """Not from a sibling, not a response, not SIP: dropped."""
        relay = RelayProtocol(self.transactions, [7001])
        relay.datagramReceived(responseBytes(200, VIA), ("127.0.0.1", 7003))
        relay.datagramReceived(responseBytes(200, VIA), ("192.0.2.1", 7001))
        relay.datagramReceived(requestBytes(), ("127.0.0.1", 7001))
        relay.datagramReceived(b"\x00garbage", ("127.0.0.1", 7001))
        self.assertEqual(self.transactions.received, [])
