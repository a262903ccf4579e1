"""``workers = N``: N server processes on one machine, supervised.

The parent (`SupervisorService`) runs no SIP stack. At start it binds every
listening address once per worker, each socket with ``SO_REUSEPORT`` (the
kernel spreads connections and datagrams over the sockets by a hash of the
peer's address and port, so a phone's datagrams keep reaching the same
process), and starts each worker as ``twistd presence`` with its sockets
and its place given by ``--worker`` (`WorkerSpec`). Each worker is a member
of the cluster (shared mode on PostgreSQL) under an id of its own,
``BASE/INDEX`` (`workerServerId`), the same at each of its restarts.

A worker that dies has its sockets closed by the parent: the kernel then
spreads what arrives over the others' sockets (refreshes land at live
workers, and so do the responses to the NOTIFYs of the subscriptions taken
over). The worker restarted (`Supervisor`, with a back-off) gets sockets
bound anew on the same ports, and comes back under its id; if it stayed
away for ``node_timeout`` the others took its subscriptions over
(`presence.cluster.member`). Since a datagram goes to whichever socket the
peer's address hashes to, not to the worker that sent the request it
answers, each worker relays the UDP responses it has no transaction for to
the others (`ResponseRelay`).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from twisted.application import service
from twisted.internet import defer, protocol
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from presence.sip.errors import SIPParseError
from presence.sip.message import SIPResponse
from presence.sip.parser import parseDatagram
from presence.sip.transport import Peer

#: The longest server id (OpenSIPS's ``sharing_tag`` is ``VARCHAR(32)``).
MAX_SERVER_ID: Final = 32

#: Seconds before the first restart of a worker that died.
FIRST_DELAY: Final = 1.0

#: The longest wait before a restart: the delay doubles at each death of a
#: worker that had not run `STABLE` seconds.
MAX_DELAY: Final = 30.0

#: Seconds a worker must run for its next death to restart it after
#: `FIRST_DELAY` again.
STABLE: Final = 10.0

#: Seconds the workers have to stop after SIGTERM before they get SIGKILL.
STOP_TIMEOUT: Final = 15.0


def workerServerId(base: str, index: int) -> str:
    """The cluster id of worker ``index``: ``BASE/INDEX``.

    ``base`` is the configured ``server_id``, or the default ``host:port``.
    Too long for `MAX_SERVER_ID`: the base is shortened, a hash of the whole
    kept, so that two bases never share ids.
    """
    suffix = f"/{index}"
    name = base + suffix
    if len(name) <= MAX_SERVER_ID:
        return name
    digest = hashlib.sha1(base.encode("utf-8")).hexdigest()[:6]
    keep = MAX_SERVER_ID - len(suffix) - len(digest) - 1
    return f"{base[:keep]}~{digest}{suffix}"


@dataclass(frozen=True)
class WorkerSocket:
    """One listening socket handed to a worker.

    Attributes:
        description: the ``listen`` setting it serves.
        transport: ``"udp"`` or ``"tcp"``.
        fd: its file descriptor (the same number in the parent and the
            worker).
        family: its address family (``socket.AF_INET``...).
        port: the port it is bound to (the one the kernel chose for 0).
    """

    description: str
    transport: str
    fd: int
    family: int
    port: int


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker is told by its parent, as ``--worker`` (JSON).

    Attributes:
        index: its number, from 1 to the number of workers.
        count: the number of workers.
        serverId: its id in the cluster.
        sockets: its listening sockets, already bound.
        relay: its relay socket (loopback UDP), or ``None``.
        siblings: the relay ports of the other workers.
    """

    index: int
    count: int
    serverId: str
    sockets: tuple[WorkerSocket, ...]
    relay: WorkerSocket | None = None
    siblings: tuple[int, ...] = ()

    def encode(self) -> str:
        """The option's text."""
        return json.dumps(
            {
                "index": self.index,
                "count": self.count,
                "serverId": self.serverId,
                "sockets": [_socketFields(s) for s in self.sockets],
                "relay": None if self.relay is None else _socketFields(self.relay),
                "siblings": list(self.siblings),
            },
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, text: str) -> WorkerSpec:
        """Read the option's text.

        Raises:
            ValueError: it is not what `encode` writes.
        """
        try:
            data = json.loads(text)
            return cls(
                index=int(data["index"]),
                count=int(data["count"]),
                serverId=str(data["serverId"]),
                sockets=tuple(_socketOf(fields) for fields in data["sockets"]),
                relay=None if data.get("relay") is None else _socketOf(data["relay"]),
                siblings=tuple(int(p) for p in data.get("siblings", ())),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"--worker: not a worker description: {e}") from None


def _socketFields(s: WorkerSocket) -> list[Any]:
    return [s.description, s.transport, s.fd, s.family, s.port]


def _socketOf(fields: Any) -> WorkerSocket:
    description, transport, fd, family, port = fields
    return WorkerSocket(
        str(description), str(transport), int(fd), int(family), int(port)
    )


def bindShared(transport: str, interface: str, port: int) -> socket.socket:
    """A socket bound with ``SO_REUSEPORT`` (and listening, for TCP).

    The interface is a literal address, or empty for every IPv4 address.
    """
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((interface, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bindAll(
    addresses: Sequence[tuple[str, str, str, int]], count: int
) -> list[list[tuple[WorkerSocket, socket.socket]]]:
    """Bind every address ``count`` times, sharing each port.

    Args:
        addresses: ``(description, transport, interface, port)`` of each
            UDP or TCP listener.
        count: the number of workers.

    Returns:
        For each worker, its sockets: the descriptions and the open sockets
        (which the caller keeps open).
    """
    perWorker: list[list[tuple[WorkerSocket, socket.socket]]] = [
        [] for _ in range(count)
    ]
    try:
        for description, transport, interface, port in addresses:
            bound = port
            for sockets in perWorker:
                sock = bindShared(transport, interface, bound)
                bound = int(sock.getsockname()[1])
                os.set_inheritable(sock.fileno(), True)
                sockets.append(
                    (
                        WorkerSocket(
                            description, transport, sock.fileno(), sock.family, bound
                        ),
                        sock,
                    )
                )
    except BaseException:
        for sockets in perWorker:
            for _, sock in sockets:
                sock.close()
        raise
    return perWorker


def _bindRelays(count: int) -> list[tuple[WorkerSocket, socket.socket]]:
    """One loopback UDP socket per worker, each on a port of its own."""
    relays: list[tuple[WorkerSocket, socket.socket]] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind(("127.0.0.1", 0))
                sock.setblocking(False)
                os.set_inheritable(sock.fileno(), True)
            except BaseException:
                sock.close()
                raise
            port = int(sock.getsockname()[1])
            described = WorkerSocket(
                "relay", "udp", sock.fileno(), int(sock.family), port
            )
            relays.append((described, sock))
    except BaseException:
        for _, sock in relays:
            sock.close()
        raise
    return relays


class RunningWorker(Protocol):
    """A started worker, as the supervisor sees it."""

    @property
    def pid(self) -> int | None:
        """Its process id; ``None`` once it has exited."""

    def signal(self, name: str) -> None:
        """Send it ``"TERM"`` or ``"KILL"``; nothing if it has exited."""


#: Starts worker ``index``, calling back with its exit status (an exit code,
#: or the negative of the signal that killed it) when it ends.
Spawner = Callable[[int, Callable[[int], None]], RunningWorker]


class Supervisor:
    """Keeps N workers running: one that dies is restarted after a delay.

    The delay starts at `FIRST_DELAY` and doubles at each death up to
    `MAX_DELAY`; a worker that had run `STABLE` seconds before it died
    starts again from `FIRST_DELAY`.

    Attributes:
        workers: the running workers by index.
        restarts: the restarts done, by index.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        count: int,
        spawn: Spawner,
        firstDelay: float = FIRST_DELAY,
        maxDelay: float = MAX_DELAY,
        stable: float = STABLE,
        stopTimeout: float = STOP_TIMEOUT,
    ) -> None:
        """Supervise ``count`` workers started by ``spawn``."""
        self.clock = clock
        self.count = count
        self.spawn = spawn
        self.firstDelay = firstDelay
        self.maxDelay = maxDelay
        self.stable = stable
        self.stopTimeout = stopTimeout
        self.workers: dict[int, RunningWorker] = {}
        self.restarts: dict[int, int] = {}
        self._delays: dict[int, float] = {}
        self._started: dict[int, float] = {}
        self._pending: dict[int, IDelayedCall] = {}
        self._stopping = False
        self._stopped: defer.Deferred[None] | None = None

    def start(self) -> None:
        """Start every worker."""
        for index in range(1, self.count + 1):
            self._start(index)

    def _start(self, index: int) -> None:
        self._pending.pop(index, None)
        self._started[index] = self.clock.seconds()
        try:
            worker = self.spawn(index, lambda status: self._exited(index, status))
        except Exception:
            self.log.failure("worker {index} could not start", index=index)
            self._schedule(index)
            return
        self.workers[index] = worker
        self.log.info("worker {index} started: pid {pid}", index=index, pid=worker.pid)

    def _exited(self, index: int, status: int) -> None:
        self.workers.pop(index, None)
        if self._stopping:
            self.log.info(
                "worker {index} stopped ({status})", index=index, status=status
            )
            if not self.workers and self._stopped is not None:
                stopped, self._stopped = self._stopped, None
                stopped.callback(None)
            return
        ran = self.clock.seconds() - self._started.get(index, 0.0)
        if ran >= self.stable:
            self._delays.pop(index, None)
        delay = self._schedule(index)
        self.log.warn(
            "worker {index} exited ({status}) after {ran:.1f} s;"
            " restarting it in {delay:.1f} s",
            index=index,
            status=status,
            ran=ran,
            delay=delay,
        )

    def _schedule(self, index: int) -> float:
        """Restart ``index`` later; return the delay."""
        delay = self._delays.get(index, self.firstDelay)
        self._delays[index] = min(delay * 2, self.maxDelay)
        self.restarts[index] = self.restarts.get(index, 0) + 1
        self._pending[index] = self.clock.callLater(delay, self._start, index)
        return delay

    def restartNow(self, index: int) -> bool:
        """Start worker ``index`` now if it waits for its restart.

        Returns:
            Whether one was waiting.
        """
        call = self._pending.get(index)
        if call is None or not call.active():
            return False
        call.reset(0)
        return True

    def stop(self) -> defer.Deferred[None]:
        """Stop every worker (SIGTERM, SIGKILL after ``stopTimeout``).

        Returns:
            Fires once every worker has exited.
        """
        self._stopping = True
        for call in self._pending.values():
            call.cancel()
        self._pending.clear()
        if not self.workers:
            return defer.succeed(None)
        stopped: defer.Deferred[None] = defer.Deferred()
        self._stopped = stopped
        for worker in list(self.workers.values()):
            worker.signal("TERM")
        kill = self.clock.callLater(self.stopTimeout, self._kill)
        stopped.addBoth(lambda result: _cancelled(kill, result))
        return stopped

    def _kill(self) -> None:
        for index, worker in list(self.workers.items()):
            self.log.warn("worker {index} did not stop: killed", index=index)
            worker.signal("KILL")


def _cancelled(call: IDelayedCall, result: Any) -> Any:
    if call.active():
        call.cancel()
    return result


class _WorkerProtocol(protocol.ProcessProtocol):
    """Tells the supervisor when a worker process ends."""

    def __init__(self, onExit: Callable[[int], None]) -> None:
        self.onExit = onExit

    def processEnded(self, reason: Failure) -> None:
        value = reason.value
        code = getattr(value, "exitCode", None)
        killed = getattr(value, "signal", None)
        self.onExit(-int(killed) if killed else int(code or 0))


class _Process:
    """A worker process started by the reactor's ``spawnProcess``."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport

    @property
    def pid(self) -> int | None:
        pid = self.transport.pid
        return None if pid is None else int(pid)

    def signal(self, name: str) -> None:
        if self.transport.pid is not None:
            try:
                self.transport.signalProcess(name)
            except OSError:
                pass


#: What a worker's interpreter runs: twistd, reading the arguments after it.
_TWISTD: Final = (
    "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()"
)


def workerCommand(arguments: Sequence[str], spec: WorkerSpec) -> list[str]:
    """The command line of a worker: ``twistd presence`` in the foreground.

    The same ``presence`` options as the parent's (so the same configuration
    file), with no pid file, and ``--worker``.
    """
    return [
        sys.executable,
        "-c",
        _TWISTD,
        "--nodaemon",
        "--pidfile=",
        "presence",
        *arguments,
        "--worker",
        spec.encode(),
    ]


class SupervisorService(service.Service):
    """The parent of ``workers = N``: binds the sockets, runs the workers.

    Attributes:
        supervisor: the `Supervisor`, once started.
        ports: the port of each listen description (as bound).
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        count: int,
        addresses: Sequence[tuple[str, str, str, int]],
        baseServerId: str | None,
        arguments: Sequence[str],
    ) -> None:
        """Run ``count`` workers on ``addresses`` (see `bindAll`).

        Args:
            reactor: the parent's reactor (spawnProcess, callLater).
            count: the number of workers.
            addresses: the UDP and TCP listeners.
            baseServerId: the cluster id the workers' are made from:
                ``server_id``; ``None`` for ``host:port``, the first port
                as bound.
            arguments: the parent's ``presence`` options, given to each
                worker.
        """
        self.reactor = reactor
        self.count = count
        self.addresses = list(addresses)
        self.baseServerId = baseServerId
        self.arguments = list(arguments)
        self.supervisor: Supervisor | None = None
        self.ports: dict[str, int] = {}
        self._sockets: list[list[tuple[WorkerSocket, socket.socket]]] = []
        self._relays: list[tuple[WorkerSocket, socket.socket]] = []
        self._bound: list[tuple[str, str, str, int]] = []

    def startService(self) -> None:
        """Bind every socket, then start the workers."""
        super().startService()
        self._sockets = bindAll(self.addresses, self.count)
        self._bound = [
            (d.description, d.transport, interface, d.port)
            for (d, _), (_, _, interface, _) in zip(
                self._sockets[0] if self._sockets else [], self.addresses, strict=True
            )
        ]
        self._relays = _bindRelays(self.count)
        for described, _ in self._sockets[0]:
            self.ports[described.description] = described.port
        if self.baseServerId is None:
            from presence.cluster.member import defaultServerId

            first = self._sockets[0][0][0].port if self._sockets[0] else 5060
            self.baseServerId = defaultServerId(socket.gethostname(), first)
        self.supervisor = Supervisor(self.reactor, self.count, self._spawn)
        self.log.info(
            "presence: {count} workers on {listen}",
            count=self.count,
            listen=", ".join(f"{d} (port {p})" for d, p in self.ports.items()),
        )
        self.supervisor.start()

    def spec(self, index: int) -> WorkerSpec:
        """What worker ``index`` is told."""
        return WorkerSpec(
            index=index,
            count=self.count,
            serverId=workerServerId(self.baseServerId or "presence", index),
            sockets=tuple(s for s, _ in self._sockets[index - 1]),
            relay=self._relays[index - 1][0],
            siblings=tuple(
                r.port for i, (r, _) in enumerate(self._relays) if i != index - 1
            ),
        )

    def _spawn(self, index: int, onExit: Callable[[int], None]) -> RunningWorker:
        if not self._sockets[index - 1] and self._bound:
            # Its sockets were closed when it died: bound anew, same ports.
            self._sockets[index - 1] = bindAll(self._bound, 1)[0]

        def exited(status: int) -> None:
            self._close(index)
            onExit(status)

        try:
            return self._start(index, exited)
        except BaseException:
            self._close(index)
            raise

    def _close(self, index: int) -> None:
        """Close the sockets of worker ``index`` (which has exited)."""
        if index - 1 < len(self._sockets):
            for _, sock in self._sockets[index - 1]:
                sock.close()
            self._sockets[index - 1] = []

    def _start(self, index: int, onExit: Callable[[int], None]) -> RunningWorker:
        spec = self.spec(index)
        childFDs: dict[int, int | str] = {1: 1, 2: 2}
        for described in spec.sockets:
            childFDs[described.fd] = described.fd
        if spec.relay is not None:
            childFDs[spec.relay.fd] = spec.relay.fd
        command = workerCommand(self.arguments, spec)
        transport = self.reactor.spawnProcess(
            _WorkerProtocol(onExit),
            command[0],
            command,
            env=dict(os.environ),
            childFDs=childFDs,
        )
        return _Process(transport)

    def stopService(self) -> defer.Deferred[None]:
        """Stop the workers, then close the sockets."""
        super().stopService()
        d = defer.succeed(None) if self.supervisor is None else self.supervisor.stop()

        def close(result: Any) -> Any:
            for sockets in [*self._sockets, self._relays]:
                for _, sock in sockets:
                    sock.close()
            self._sockets = []
            self._relays = []
            return result

        d.addBoth(close)
        return d


class ParentWatch(service.Service):
    """In a worker: stops the reactor when the parent is gone.

    A parent killed without stopping its workers (SIGKILL) leaves them to
    init; they notice within ``interval`` seconds and stop.
    """

    def __init__(self, reactor: Any, interval: float = 1.0) -> None:
        """Watch the parent of this process."""
        self.reactor = reactor
        self.interval = interval
        self.parentPid = os.getppid()
        self._call: IDelayedCall | None = None

    def startService(self) -> None:
        """Check every ``interval``."""
        super().startService()
        self._call = self.reactor.callLater(self.interval, self._check)

    def _check(self) -> None:
        self._call = None
        if os.getppid() != self.parentPid:
            Logger().warn("the parent of this worker is gone: stopping")
            self.reactor.stop()
            return
        self._call = self.reactor.callLater(self.interval, self._check)

    def stopService(self) -> None:
        """Stop checking."""
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


class ResponseRelay:
    """In a worker: hands on the responses another worker is waiting for.

    The kernel gives a peer's datagrams to the worker its address hashes to
    (``SO_REUSEPORT``), whichever worker sent the request they answer: the
    200 to a NOTIFY sent by the worker that took a subscription over lands
    at the worker the phone's SUBSCRIBE came to. This sink, between the
    transports and the transaction layer, sends every UDP response that
    matches none of this worker's client transactions to the other workers'
    relay sockets (loopback, ports the parent gave), where `RelayProtocol`
    hands it to their transaction layers; one that matches nothing there
    either is dropped, never relayed again.
    """

    def __init__(self, transactions: Any, siblings: Sequence[int]) -> None:
        """Relay for ``transactions`` to the relay ports ``siblings``."""
        self.transactions = transactions
        self.siblings = tuple(siblings)
        self.port: Any = None
        self.relayed = 0

    def messageReceived(self, message: Any, peer: Any) -> None:
        """Relay a UDP response no transaction here awaits; hand on all."""
        if (
            self.port is not None
            and peer.transport == "UDP"
            and isinstance(message, SIPResponse)
        ):
            try:
                key = (message.topVia.branch, message.cseq.method)
            except SIPParseError:
                key = None
            if key is not None and key not in self.transactions.client:
                data = message.toBytes()
                self.relayed += 1
                for port in self.siblings:
                    try:
                        self.port.write(data, ("127.0.0.1", port))
                    except OSError:
                        pass
        self.transactions.messageReceived(message, peer)

    def malformedReceived(self, error: Any, peer: Any) -> None:
        """Hand on."""
        self.transactions.malformedReceived(error, peer)


class RelayProtocol(protocol.DatagramProtocol):
    """In a worker: the responses the other workers relay here.

    Only from the other workers' relay ports on the loopback, and only
    responses; each goes to the transaction layer as if received here.
    """

    def __init__(self, transactions: Any, siblings: Sequence[int]) -> None:
        """Deliver to ``transactions`` what comes from ``siblings``."""
        self.transactions = transactions
        self.siblings = frozenset(siblings)

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """Parse and deliver a relayed response."""
        if addr[0] != "127.0.0.1" or addr[1] not in self.siblings:
            return
        try:
            message = parseDatagram(datagram)
        except SIPParseError:
            return
        if isinstance(message, SIPResponse):
            self.transactions.messageReceived(message, Peer("UDP", addr[0], addr[1]))
