"""Benchmark driver: load the presence server with sipp and report the figures.

Run it from anywhere with any Python 3.11 (it uses the standard library only)::

    python bench/run.py [--quick] [scenario ...]

For each scenario and each step of its call-rate ladder, every repeat starts a
fresh server (``twistd -n presence``) on a free loopback port, pinned to one
core, waits until it answers an OPTIONS, runs sipp from another core at that
rate for a bounded number of calls, reads the server's CPU time from
``/proc/PID/stat`` before and after, and stops the server.  The median of the
repeats is printed for every step, and a table sums up at the end.

Scenarios are entries of `SCENARIOS`; each names a sipp XML file in
``bench/scenarios/``.  Probes (`PROBES`: NOTIFY fan-out, memory per
subscription, PUBLISH latency) are driven by ``bench/load.py`` instead of
sipp, three times each against fresh servers.  With ``--profile DIR``, py-spy
samples the server during every sipp run and the busiest functions are
summed up.  All traffic goes to 127.0.0.1, every loop is bounded in
count and in time, and temporary files live in one temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

BENCH: Final = Path(__file__).resolve().parent
REPO: Final = BENCH.parent
SCENARIO_DIR: Final = BENCH / "scenarios"
LOOPBACK: Final = "127.0.0.1"

#: sipp gives up on a transaction after this long without the expected reply.
RECV_TIMEOUT_MS: Final = 5000
#: How long a server may take to answer its first OPTIONS.
STARTUP_TIMEOUT: Final = 20.0
#: How long a server may take to stop after SIGTERM before it is killed.
STOP_TIMEOUT: Final = 15.0
#: A step keeps up when the answered rate is at least this share of the target.
KEEP_UP: Final = 0.95
#: Lines of the server's log that count as trouble.
LOG_TROUBLE: Final = ("#error]", "#critical]", "#warn]", "Traceback", "Unhandled")
#: The server's configuration file: the in-memory store, whatever the default.
#: The limits off: sipp and the probes send thousands of requests a second
#: from one address, tens of thousands of subscriptions from one watcher, and
#: the benchmark measures what the server sustains, not what it refuses.
LIMITS_OFF: Final = (
    "source_rate_limit = 0\n"
    "max_subscriptions_per_watcher = 0\n"
    "max_publications_per_presentity = 0\n"
    "max_tcp_connections = 0\n"
)
#: The server's configuration file; --database and --fallback2db change it.
SERVER_CONFIG = 'database = "memory"\n' + LIMITS_OFF
#: Whether the server runs its administration site (on a free loopback port,
#: as the default configuration runs it on 8080), from --admin.
ADMIN = "on"
#: Seconds between fetches of /metrics while the server runs (0: none).
SCRAPE = 0.0
#: py-spy's sampling rate (per second) with --profile.
PROFILE_RATE: Final = 250


@dataclass(frozen=True)
class Scenario:
    """One load scenario: a sipp XML file and how to drive it.

    Attributes:
        name: the name given on the command line.
        xml: the sipp scenario file, relative to ``bench/scenarios/``.
        description: one line for ``--list``.
        unit: what one transaction is called in the report (``OPTIONS``).
        transactionsPerCall: server transactions in one sipp call, to turn
            calls into requests (a SUBSCRIBE plus its NOTIFY is 2).
        rates: the call-rate ladder (calls per second), climbed until a step
            is not sustained.
        quickRates: the ladder for ``--quick``.
        seconds: how long each step lasts; the call count is rate x seconds.
        quickSeconds: the same for ``--quick``.
        transport: sipp's ``-t`` value (``u1``: UDP, one socket).
        sippArgs: more sipp arguments (for example ``-aa`` to answer NOTIFY).
        serverArgs: more ``twistd presence`` arguments.
        auth: run the server with digest authentication (`AUTH_CONFIG`) on
            a database holding the user sipp logs in as (`AUTH_USER`); an
            SQLite file in the run's directory when the database is memory.
    """

    name: str
    xml: str
    description: str
    unit: str
    rates: tuple[int, ...]
    quickRates: tuple[int, ...]
    transactionsPerCall: int = 1
    seconds: float = 5.0
    quickSeconds: float = 1.0
    transport: str = "u1"
    sippArgs: tuple[str, ...] = ()
    serverArgs: tuple[str, ...] = ()
    auth: bool = False


#: The settings of an ``auth`` scenario: MD5 only, sipp computes no SHA-256.
AUTH_CONFIG: Final = 'authentication = true\nauth_algorithms = ["MD5"]\n'
#: The user and password of the ``auth`` scenarios' sipp (realm and domain:
#: the server's address).
AUTH_USER: Final = ("bench", "bench-password")


#: The scenarios, by name; add PUBLISH and SUBSCRIBE/NOTIFY here (see README).
SCENARIOS: Final[dict[str, Scenario]] = {
    s.name: s
    for s in (
        Scenario(
            name="options",
            xml="options.xml",
            description="UDP OPTIONS ping, expect 200",
            unit="OPTIONS",
            rates=(500, 1000, 1500, 2000, 3000, 4000, 6000, 8000, 12000, 16000, 20000),
            quickRates=(500, 2000),
        ),
        Scenario(
            name="publish",
            xml="publish.xml",
            description="UDP initial PUBLISH, ~400-byte PIDF, new presentity each",
            unit="PUBLISH",
            rates=(500, 1000, 1500, 2000, 2500, 3000, 4000, 5000, 6000, 8000),
            quickRates=(200, 500),
        ),
        Scenario(
            name="publish-auth",
            xml="publish-auth.xml",
            description="UDP initial PUBLISH, challenged (401), then with MD5 digest",
            unit="PUBLISH",
            rates=(250, 500, 1000, 1500, 2000, 2500, 3000, 4000),
            quickRates=(100, 250),
            auth=True,
        ),
        Scenario(
            name="subscribe",
            xml="subscribe-cycle.xml",
            description="UDP SUBSCRIBE, NOTIFY, un-SUBSCRIBE, final NOTIFY",
            unit="cycle",
            rates=(250, 500, 750, 1000, 1250, 1500, 2000, 3000),
            quickRates=(100, 250),
        ),
    )
}


@dataclass(frozen=True)
class Probe:
    """One measurement made by ``bench/load.py`` rather than by sipp.

    Attributes:
        name: the name given on the command line.
        mode: ``load.py``'s mode (``fanout``, ``memory``, ``latency``).
        description: one line for ``--list``.
        args: more ``load.py`` arguments.
        quickArgs: the same, for ``--quick``.
        figures: the JSON keys to report, with their labels.
        timeout: seconds before ``load.py`` is killed.
    """

    name: str
    mode: str
    description: str
    args: tuple[str, ...]
    quickArgs: tuple[str, ...]
    figures: tuple[tuple[str, str], ...]
    timeout: float = 300


_FANOUT_FIGURES: Final = (
    ("lastNotifyMs", "PUBLISH to last NOTIFY ms"),
    ("firstNotifyMs", "first NOTIFY ms"),
    ("publishMs", "PUBLISH 200 ms"),
    ("serverCPUms", "server CPU ms"),
    ("notifyRetransmissions", "NOTIFYs retransmitted"),
    ("fanoutUDPDrops", "UDP drops after PUBLISH"),
    ("udpDrops", "UDP drops, whole run"),
    ("setupSeconds", "setup s"),
)

#: The probes, by name.
PROBES: Final[dict[str, Probe]] = {
    p.name: p
    for p in (
        Probe(
            name="fanout1k",
            mode="fanout",
            description="1,000 watchers of one presentity, then one PUBLISH",
            args=("--watchers", "1000"),
            quickArgs=("--watchers", "200"),
            figures=_FANOUT_FIGURES,
        ),
        Probe(
            name="fanout5k",
            mode="fanout",
            description="5,000 watchers of one presentity, then one PUBLISH",
            args=("--watchers", "5000"),
            quickArgs=("--watchers", "1000"),
            figures=_FANOUT_FIGURES,
        ),
        Probe(
            name="memory",
            mode="memory",
            description="RSS per subscription from 10,000 to 50,000 (TCP)",
            args=("--first", "10000", "--total", "50000"),
            quickArgs=("--first", "2000", "--total", "6000"),
            figures=(
                ("bytesPerSubscription", "bytes per subscription"),
                ("rssFirstKiB", "RSS at first KiB"),
                ("rssTotalKiB", "RSS at total KiB"),
                ("subscribesPerSecond", "SUBSCRIBE/s while filling"),
            ),
            timeout=900,
        ),
        Probe(
            name="latency",
            mode="latency",
            description="UDP initial PUBLISH at a steady 200/s for 10 s: p50, p99",
            args=("--rate", "200", "--seconds", "10"),
            quickArgs=("--rate", "200", "--seconds", "3"),
            figures=(
                ("p50ms", "p50 ms"),
                ("p90ms", "p90 ms"),
                ("p99ms", "p99 ms"),
                ("maxMs", "max ms"),
                ("serverCPUms", "server CPU ms"),
                ("retransmissions", "retransmissions"),
                ("udpDrops", "UDP drops"),
            ),
        ),
    )
}


@dataclass
class RunResult:
    """The figures of one sipp run against one fresh server."""

    rate: int
    calls: int
    successful: int = 0
    failed: int = 0
    retransmissions: int = 0
    elapsed: float = 0.0
    responseMs: float = 0.0
    serverCPU: float = 0.0
    sippCPU: float = 0.0
    wall: float = 0.0
    rssMiB: float = 0.0
    udpDrops: int = 0
    otherCPU: float = 0.0
    sippStatus: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def answeredPerSecond(self) -> float:
        """Completed transactions per second of sipp's run time."""
        return self.successful / self.elapsed if self.elapsed > 0 else 0.0

    def cpuMsPerRequest(self, transactionsPerCall: int) -> float:
        """Server CPU milliseconds per completed request."""
        requests = self.successful * transactionsPerCall
        return 1000 * self.serverCPU / requests if requests else float("nan")


@dataclass
class Step:
    """The median figures of the repeats at one rate."""

    scenario: Scenario
    rate: int
    runs: list[RunResult]

    def median(self, name: str) -> float:
        """The median over the repeats of a `RunResult` attribute."""
        return statistics.median(float(getattr(r, name)) for r in self.runs)

    @property
    def answeredPerSecond(self) -> float:
        """Median completed transactions per second."""
        return statistics.median(r.answeredPerSecond for r in self.runs)

    @property
    def cpuMsPerRequest(self) -> float:
        """Median server CPU milliseconds per request."""
        perCall = self.scenario.transactionsPerCall
        return statistics.median(r.cpuMsPerRequest(perCall) for r in self.runs)

    @property
    def sustained(self) -> bool:
        """No repeat failed a call, and the server kept up with the rate."""
        return (
            all(r.failed == 0 and r.sippStatus == 0 for r in self.runs)
            and self.answeredPerSecond >= KEEP_UP * self.rate
        )


# -- processes and ports -------------------------------------------------------


def freePort(tcpToo: bool = False) -> int:
    """A loopback port that is free now for UDP (and TCP, if asked)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((LOOPBACK, 0))
            port: int = udp.getsockname()[1]
            if not tcpToo:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((LOOPBACK, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free loopback port found")


def freePortPair() -> int:
    """A free UDP port p with p + 2 free too (sipp's RTP echo ports)."""
    for _ in range(100):
        port = freePort()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            try:
                other.bind((LOOPBACK, port + 2))
            except OSError:
                continue
            return port
    raise RuntimeError("no free pair of loopback ports found")


def pinning() -> tuple[list[str], list[str]]:
    """The taskset prefixes for the server and for sipp: two different cores.

    Without taskset or with fewer than two usable cores, nothing is pinned.
    """
    taskset = shutil.which("taskset")
    cores = sorted(os.sched_getaffinity(0))
    if taskset is None or len(cores) < 2:
        return [], []
    return [taskset, "-c", str(cores[0])], [taskset, "-c", str(cores[1])]


def cpuSeconds(pid: int) -> float:
    """User plus system CPU time of a process, from ``/proc/PID/stat``."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rssMiB(pid: int) -> float:
    """Resident memory of a process in MiB, from ``/proc/PID/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def udpReceiveErrors() -> int:
    """The host's count of UDP datagrams dropped for a full receive buffer.

    It counts every socket of the host (``RcvbufErrors`` in ``/proc/net/snmp``),
    so traffic other than the benchmark's can add to it.
    """
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
    udp = [line for line in lines if line and line[0] == "Udp:"]
    if len(udp) < 2 or "RcvbufErrors" not in udp[0]:
        return 0
    return int(udp[1][udp[0].index("RcvbufErrors")])


def coreBusySeconds(core: int | None) -> float:
    """CPU seconds one core has spent busy since boot (0 for no core).

    Busy is user, nice, system, irq, softirq and steal time in ``/proc/stat``.
    """
    if core is None:
        return 0.0
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == f"cpu{core}":
            busy = sum(int(fields[i]) for i in (1, 2, 3, 6, 7, 8))
            return busy / os.sysconf("SC_CLK_TCK")
    return 0.0


def serverCore() -> int | None:
    """The core the server is pinned to, if it is pinned."""
    serverPin, _ = pinning()
    return int(serverPin[2]) if serverPin else None


def childrenCPU() -> float:
    """CPU seconds of every child waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def optionsRequest(port: int, localPort: int, branch: str) -> bytes:
    """A minimal OPTIONS request, for the readiness probe."""
    return (
        f"OPTIONS sip:probe@{LOOPBACK}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {LOOPBACK}:{localPort};branch={branch}\r\n"
        f"From: <sip:bench@{LOOPBACK}:{localPort}>;tag={branch[-8:]}\r\n"
        f"To: <sip:probe@{LOOPBACK}:{port}>\r\n"
        f"Call-ID: {branch}@{LOOPBACK}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class Server:
    """One ``twistd -n presence`` child on a free loopback port."""

    def __init__(self, twistd: str, workdir: Path, pin: Sequence[str]) -> None:
        """Prepare, without starting; ``workdir`` gets the log and is the cwd."""
        self.twistd = twistd
        self.workdir = workdir
        self.pin = list(pin)
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.logPath = workdir / "server.log"
        self.configPath = workdir / "bench.toml"
        self._log: IO[bytes] | None = None
        self.stopSeconds = 0.0
        self.exitStatus: int | None = None
        self.adminPort = 0
        self.scrapes = 0
        self._scraping: threading.Event | None = None

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.process is not None
        return self.process.pid

    def cpuSeconds(self) -> float:
        """The server's user plus system CPU seconds so far."""
        return cpuSeconds(self.pid)

    def rssMiB(self) -> float:
        """The server's resident memory in MiB."""
        return rssMiB(self.pid)

    def start(self, extraArgs: Sequence[str] = (), auth: bool = False) -> None:
        """Start the server and wait until it answers OPTIONS.

        With ``auth``, authentication is on and `AUTH_USER` is provisioned
        first with the ``presence-ctl`` next to ``twistd``.

        Raises:
            RuntimeError: the server exited or stayed silent, three times.
        """
        config = SERVER_CONFIG
        if auth:
            config = (
                config.replace('"memory"', '"sqlite:presence.sqlite"') + AUTH_CONFIG
            )
        self.configPath.write_text(config)
        if auth:
            self.provision()
        for _ in range(3):
            self.port = freePort(tcpToo=True)
            listen = f"{self.port}:interface={LOOPBACK}"
            if ADMIN == "on":
                self.adminPort = freePort(tcpToo=True)
                admin = f"tcp:{self.adminPort}:interface={LOOPBACK}"
            else:
                admin = "none"
            command = [
                *self.pin,
                self.twistd,
                "-n",
                "--pidfile=",
                "presence",
                "--config",
                str(self.configPath),
                "--listen",
                f"udp:{listen}",
                "--listen",
                f"tcp:{listen}",
                "--admin-listen",
                admin,
                *extraArgs,
            ]
            self._log = self.logPath.open("ab")
            self.process = subprocess.Popen(
                command,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            if self._waitReady():
                if SCRAPE and ADMIN == "on":
                    self._startScraping()
                return
            self.stop()
        raise RuntimeError(
            f"the server did not start; its log ends with:\n{self.logTail()}"
        )

    def provision(self) -> None:
        """Create the schema and `AUTH_USER` with ``presence-ctl``."""
        ctl = str(Path(self.twistd).with_name("presence-ctl"))
        user, password = AUTH_USER
        config = ["--config", str(self.configPath)]
        for args, stdin in (
            (["db", "init"], ""),
            (["user", "add", "--password-stdin", f"{user}@{LOOPBACK}"], password),
        ):
            subprocess.run(
                [ctl, *config, *args],
                cwd=self.workdir,
                input=(stdin + "\n").encode(),
                stdout=subprocess.DEVNULL,
                check=True,
                timeout=60,
            )

    def _waitReady(self) -> bool:
        """Probe with OPTIONS until a 200 comes back, the child dies, or time."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((LOOPBACK, 0))
            probe.settimeout(0.2)
            localPort = probe.getsockname()[1]
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    return False
                branch = "z9hG4bK" + uuid.uuid4().hex[:16]
                probe.sendto(
                    optionsRequest(self.port, localPort, branch),
                    (LOOPBACK, self.port),
                )
                end = time.monotonic() + 0.2
                while time.monotonic() < end:
                    try:
                        data = probe.recv(65535)
                    except (TimeoutError, ConnectionRefusedError):
                        break
                    if data.startswith(b"SIP/2.0 200") and branch.encode() in data:
                        return True
        return False

    def _startScraping(self) -> None:
        """Fetch /metrics every SCRAPE seconds, as Prometheus would, until stop."""
        stop = self._scraping = threading.Event()
        url = f"http://{LOOPBACK}:{self.adminPort}/metrics"

        def scrape() -> None:
            while not stop.wait(SCRAPE):
                try:
                    with urllib.request.urlopen(url, timeout=5) as response:
                        response.read()
                    self.scrapes += 1
                except OSError:
                    pass

        threading.Thread(target=scrape, name="scrape", daemon=True).start()

    def stop(self) -> None:
        """SIGTERM the server, wait for it, and kill it if it hangs."""
        if self._scraping is not None:
            self._scraping.set()
            self._scraping = None
        if self.process is None:
            return
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)
        self.stopSeconds = time.monotonic() - started
        self.exitStatus = self.process.returncode
        if self._log is not None:
            self._log.close()
            self._log = None

    def logTail(self, lines: int = 15) -> str:
        """The last lines of the server's log."""
        try:
            text = self.logPath.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def logTrouble(self) -> list[str]:
        """The log lines at warn level or worse, and tracebacks."""
        try:
            text = self.logPath.read_text(errors="replace")
        except OSError:
            return []
        return [
            line for line in text.splitlines() if any(t in line for t in LOG_TROUBLE)
        ]


# -- sipp ---------------------------------------------------------------------


def readStatistics(path: Path) -> dict[str, str]:
    """The last row of sipp's ``-trace_stat`` CSV, by column name."""
    rows = [line for line in path.read_text(errors="replace").splitlines() if line]
    if len(rows) < 2:
        return {}
    header = rows[0].split(";")
    values = rows[-1].split(";")
    return dict(zip(header, values, strict=False))


def epoch(value: str) -> float:
    """The epoch seconds of a sipp time stamp (``date<TAB>time<TAB>epoch``)."""
    return float(value.split("\t")[-1])


def milliseconds(value: str) -> float:
    """Milliseconds of a sipp duration (``HH:MM:SS:microseconds``)."""
    hours, minutes, seconds, micro = (int(p) for p in value.split(":"))
    return (hours * 3600 + minutes * 60 + seconds) * 1000 + micro / 1000


def runSipp(
    scenario: Scenario,
    server: Server,
    rate: int,
    calls: int,
    workdir: Path,
    pin: Sequence[str],
    profile: Path | None = None,
    extraArgs: Sequence[str] = (),
) -> RunResult:
    """Run sipp once against the server and collect the figures.

    With ``profile``, py-spy samples the server while sipp runs and writes
    its raw (folded) stacks there.  ``extraArgs`` go to sipp last (for
    example ``-l 100``: at most 100 calls at once, a closed loop).  The
    server is anything with a ``port`` and ``pid`` and the methods
    ``cpuSeconds`` and ``rssMiB`` (`Server`, or `compare.Reference`).
    """
    sipp = shutil.which("sipp")
    if sipp is None:
        raise RuntimeError("sipp is not installed (Debian package sip-tester)")
    result = RunResult(rate=rate, calls=calls)
    statPath = workdir / "stat.csv"
    seconds = calls / rate
    globalTimeout = int(seconds + RECV_TIMEOUT_MS / 1000 + 10)
    for _ in range(3):
        statPath.unlink(missing_ok=True)
        command = [
            *pin,
            sipp,
            f"{LOOPBACK}:{server.port}",
            "-sf",
            str(SCENARIO_DIR / scenario.xml),
            "-t",
            scenario.transport,
            "-s",
            "bench",
            "-i",
            LOOPBACK,
            "-mi",
            LOOPBACK,
            "-p",
            str(freePort(tcpToo=True)),
            "-mp",
            str(freePortPair()),
            "-cp",
            str(freePort()),
            "-r",
            str(rate),
            "-m",
            str(calls),
            "-recv_timeout",
            str(RECV_TIMEOUT_MS),
            "-timeout",
            f"{globalTimeout}s",
            "-timeout_error",
            "-nostdin",
            "-trace_stat",
            "-stf",
            str(statPath),
            "-fd",
            "1",
            "-trace_screen",
            "-screen_file",
            str(workdir / "screen.log"),
            "-trace_err",
            "-error_file",
            str(workdir / "errors.log"),
            *scenario.sippArgs,
            *extraArgs,
        ]
        if scenario.auth:
            # sipp's digest uri is the server's address unless told: make it
            # the Request-URI, which the server insists on (RFC 7616 3.4).
            command += ["-auth_uri", f"{AUTH_USER[0]}@{LOOPBACK}:{server.port}"]
        profiler = startProfiler(server.pid, profile) if profile else None
        cpuBefore = server.cpuSeconds()
        coreBefore = coreBusySeconds(serverCore())
        sippBefore = childrenCPU()
        dropsBefore = udpReceiveErrors()
        started = time.monotonic()
        with (workdir / "sipp.out").open("wb") as out:
            process = subprocess.Popen(
                command,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                result.sippStatus = process.wait(globalTimeout + 15)
            except subprocess.TimeoutExpired:
                process.kill()
                result.sippStatus = process.wait()
                result.notes.append("sipp hung and was killed")
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        result.wall = time.monotonic() - started
        result.serverCPU = server.cpuSeconds() - cpuBefore
        coreBusy = coreBusySeconds(serverCore()) - coreBefore
        result.otherCPU = max(0.0, coreBusy - result.serverCPU)
        result.sippCPU = childrenCPU() - sippBefore
        result.rssMiB = server.rssMiB()
        result.udpDrops = udpReceiveErrors() - dropsBefore
        if profiler is not None:
            stopProfiler(profiler)
        if statPath.exists():
            break
        # No statistics: sipp could not bind (a port raced away); try again.
        result.notes.append(f"sipp exited {result.sippStatus} without statistics")
    stats = readStatistics(statPath) if statPath.exists() else {}
    if not stats:
        result.notes.append("no statistics from sipp")
        return result
    result.successful = int(stats["SuccessfulCall(C)"])
    result.failed = int(stats["FailedCall(C)"])
    result.retransmissions = int(stats["Retransmissions(C)"])
    result.elapsed = epoch(stats["CurrentTime"]) - epoch(stats["StartTime"])
    result.responseMs = milliseconds(stats["ResponseTime1(C)"])
    for column in ("OutOfCallMsgs(C)", "DeadCallMsgs(C)", "FatalErrors(C)"):
        if int(stats.get(column, "0") or 0):
            result.notes.append(f"{column} = {stats[column]}")
    if result.otherCPU > 0.05 * result.wall:
        result.notes.append(
            f"other processes used {100 * result.otherCPU / result.wall:.0f}%"
            " of the server's core: the figures are disturbed"
        )
    if result.sippStatus not in (0, 1):
        result.notes.append(f"sipp exit status {result.sippStatus}")
    errors = workdir / "errors.log"
    if errors.exists() and errors.stat().st_size:
        result.notes.append(f"unexpected messages logged in {errors}")
    return result


# -- profiles -----------------------------------------------------------------


def findPySpy() -> str | None:
    """py-spy on $PATH, or in the throw-away venv ``/tmp/pyspy``."""
    for candidate in (shutil.which("py-spy"), "/tmp/pyspy/bin/py-spy"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def startProfiler(pid: int, output: Path) -> subprocess.Popen[bytes] | None:
    """Start py-spy sampling process ``pid`` into ``output`` (raw folded stacks)."""
    pySpy = findPySpy()
    if pySpy is None:
        say("  py-spy not found (python3 -m venv /tmp/pyspy && /tmp/pyspy/bin/pip")
        say("  install py-spy); running without a profile")
        return None
    output.parent.mkdir(parents=True, exist_ok=True)
    command = [
        pySpy,
        "record",
        "--pid",
        str(pid),
        "--rate",
        str(PROFILE_RATE),
        "--nonblocking",
        "--format",
        "raw",
        "--output",
        str(output),
        "--duration",
        "600",
    ]
    log = output.with_suffix(".log").open("wb")
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    time.sleep(0.5)  # let it attach before the load starts
    return process


def stopProfiler(process: subprocess.Popen[bytes]) -> None:
    """Stop py-spy with SIGINT, which makes it write its file."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


_LINE_NUMBER = re.compile(r":\d+\)$")


def profileSummary(paths: Sequence[Path], top: int = 15) -> str:
    """The functions with the most samples, on their own and with callees.

    Reads py-spy's raw format (``frame;frame;... count`` per line, outermost
    frame first), sums over ``paths``, and leaves line numbers out so that a
    function counts once.
    """
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = [_LINE_NUMBER.sub(")", f) for f in stack.split(";")]
            own[frames[-1]] = own.get(frames[-1], 0) + n
            for frame in set(frames):
                inclusive[frame] = inclusive.get(frame, 0) + n
    if not total:
        return "  (no samples)"
    lines = [f"  {total} busy samples; own time (self):"]
    for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"    {100 * n / total:5.1f}%  {frame}")
    lines.append("  with callees (inclusive), below the reactor loop:")
    shown = 0
    outermost = max(inclusive.values())
    for frame, n in sorted(inclusive.items(), key=lambda kv: -kv[1]):
        if n > 0.95 * outermost:
            continue  # <module>, run, mainLoop...: in (nearly) every sample
        lines.append(f"    {100 * n / total:5.1f}%  {frame}")
        shown += 1
        if shown == 2 * top:
            break
    return "\n".join(lines)


# -- probes (bench/load.py) ---------------------------------------------------


@dataclass
class ProbeResult:
    """The figures of a probe's repeats."""

    probe: Probe
    runs: list[dict[str, object]] = field(default_factory=list)

    def median(self, key: str) -> float | None:
        """The median of a figure over the runs that have it."""
        values = [
            float(v)
            for r in self.runs
            if isinstance(v := r.get(key), int | float) and not isinstance(v, bool)
        ]
        return statistics.median(values) if values else None

    def spread(self, key: str) -> str:
        """A figure's median with its smallest and largest values."""
        values = sorted(
            float(v)
            for r in self.runs
            if isinstance(v := r.get(key), int | float) and not isinstance(v, bool)
        )
        if not values:
            return "-"
        middle = statistics.median(values)
        return f"{middle:,.1f} ({values[0]:,.1f}-{values[-1]:,.1f})"


def runProbe(
    probe: Probe, repeats: int, twistd: str, tempdir: Path, quick: bool
) -> ProbeResult:
    """Run a probe ``repeats`` times, each against a fresh server."""
    serverPin, clientPin = pinning()
    result = ProbeResult(probe)
    args = probe.quickArgs if quick else probe.args
    say(f"{probe.name}: load.py {probe.mode} {' '.join(args)}, x{repeats}")
    for repeat in range(1, repeats + 1):
        workdir = tempdir / f"{probe.name}-{repeat}"
        workdir.mkdir()
        notes: list[str] = []
        figures: dict[str, object] = {}
        with runningServer(twistd, workdir, serverPin, ()) as server:
            command = [
                *clientPin,
                sys.executable,
                str(BENCH / "load.py"),
                probe.mode,
                "--port",
                str(server.port),
                "--pid",
                str(server.pid),
                *args,
            ]
            dropsBefore = udpReceiveErrors()
            try:
                with (workdir / "load.err").open("wb") as errors:
                    done = subprocess.run(
                        command,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=errors,
                        timeout=probe.timeout,
                        check=False,
                    )
                lines = done.stdout.decode(errors="replace").strip().splitlines()
                if done.returncode == 0 and lines:
                    figures = json.loads(lines[-1])
                else:
                    notes.append(f"load.py exited {done.returncode}")
            except subprocess.TimeoutExpired:
                notes.append(f"load.py killed after {probe.timeout:g} s")
            figures["udpDrops"] = udpReceiveErrors() - dropsBefore
        trouble = server.logTrouble()
        if trouble:
            notes.append(f"{len(trouble)} warn/error log lines: {trouble[0]}")
        for key in ("failures", "unexpected", "complete"):
            value = figures.get(key)
            if (value and key != "complete") or value is False:
                notes.append(f"{key}: {value}")
        if "load.py exited" in " ".join(notes):
            tail = (workdir / "load.err").read_text(errors="replace")[-600:]
            notes.append(f"load.py said: {tail}")
        result.runs.append(figures)
        say(
            f"  {probe.name} run {repeat}/{repeats}: "
            + ", ".join(
                f"{label} {figures[key]:,.1f}"
                for key, label in probe.figures
                if isinstance(figures.get(key), int | float)
            )
        )
        for note in notes:
            say(f"    note: {note}")
    return result


def probeReport(results: Sequence[ProbeResult], repeats: int) -> str:
    """The probes' figures: median (smallest-largest) of the repeats."""
    lines = []
    for r in results:
        lines.append(f"{r.probe.name}: {r.probe.description}")
        for key, label in r.probe.figures:
            lines.append(f"  {label:30} {r.spread(key)}")
    return "\n".join(lines)


# -- the driver ---------------------------------------------------------------


@contextlib.contextmanager
def runningServer(
    twistd: str,
    workdir: Path,
    pin: Sequence[str],
    extraArgs: Sequence[str],
    auth: bool = False,
) -> Iterator[Server]:
    """A started server, stopped on the way out whatever happens."""
    server = Server(twistd, workdir, pin)
    try:
        server.start(extraArgs, auth)
        yield server
    finally:
        server.stop()


def runStep(
    scenario: Scenario,
    rate: int,
    seconds: float,
    repeats: int,
    twistd: str,
    tempdir: Path,
    profileDir: Path | None = None,
) -> Step:
    """Run one rate ``repeats`` times, each against a fresh server."""
    serverPin, sippPin = pinning()
    calls = max(1, int(rate * seconds))
    runs = []
    for repeat in range(1, repeats + 1):
        workdir = tempdir / f"{scenario.name}-r{rate}-{repeat}"
        workdir.mkdir()
        profile = None
        if profileDir is not None:
            profile = profileDir / f"{scenario.name}-r{rate}-{repeat}.txt"
        with runningServer(
            twistd, workdir, serverPin, scenario.serverArgs, scenario.auth
        ) as server:
            result = runSipp(scenario, server, rate, calls, workdir, sippPin, profile)
        trouble = server.logTrouble()
        if trouble:
            result.notes.append(f"{len(trouble)} warn/error log lines: {trouble[0]}")
        # twistd ends by re-raising the SIGTERM it handled: -15 is a clean stop.
        if server.exitStatus not in (0, -signal.SIGTERM, None):
            result.notes.append(f"server exited {server.exitStatus}")
        if server.stopSeconds > 5:
            result.notes.append(f"server took {server.stopSeconds:.1f} s to stop")
        runs.append(result)
        say(
            f"  {scenario.name} rate {rate}/s run {repeat}/{repeats}:"
            f" {result.answeredPerSecond:,.0f} {scenario.unit}/s,"
            f" failed {result.failed}, retrans {result.retransmissions},"
            f" UDP drops {result.udpDrops},"
            f" resp {result.responseMs:.1f} ms,"
            f" {result.cpuMsPerRequest(scenario.transactionsPerCall):.3f}"
            f" CPU-ms/{scenario.unit}, server CPU"
            f" {100 * result.serverCPU / max(result.wall, 1e-9):.0f}%"
        )
        for note in result.notes:
            say(f"    note: {note}")
    return Step(scenario, rate, runs)


def runScenario(
    scenario: Scenario,
    rates: Sequence[int],
    seconds: float,
    repeats: int,
    twistd: str,
    tempdir: Path,
    deadline: float,
    profileDir: Path | None = None,
) -> list[Step]:
    """Climb the rate ladder until a step is not sustained or time runs out."""
    steps = []
    for rate in rates:
        if time.monotonic() > deadline:
            say(f"{scenario.name}: time budget spent, stopping at {rate}/s")
            break
        say(f"{scenario.name}: {rate} calls/s for {seconds:g} s, x{repeats}")
        step = runStep(scenario, rate, seconds, repeats, twistd, tempdir, profileDir)
        steps.append(step)
        if not step.sustained:
            break
    return steps


def say(text: str) -> None:
    """Write a progress line to stderr."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def table(steps: Sequence[Step]) -> str:
    """The summary table: one row per step, medians of the repeats."""
    header = (
        "scenario",
        "rate/s",
        "answered/s",
        "failed",
        "retrans",
        "resp ms",
        "srv CPU%",
        "CPU-ms/req",
        "sipp CPU%",
        "RSS MiB",
        "UDP drops",
        "ok",
    )
    rows = [header]
    for s in steps:
        wall = s.median("wall") or 1e-9
        rows.append(
            (
                s.scenario.name,
                f"{s.rate}",
                f"{s.answeredPerSecond:,.0f}",
                f"{s.median('failed'):g}",
                f"{s.median('retransmissions'):g}",
                f"{s.median('responseMs'):.1f}",
                f"{100 * s.median('serverCPU') / wall:.0f}",
                f"{s.cpuMsPerRequest:.3f}",
                f"{100 * s.median('sippCPU') / wall:.0f}",
                f"{s.median('rssMiB'):.0f}",
                f"{s.median('udpDrops'):g}",
                "yes" if s.sustained else "NO",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary(scenario: Scenario, steps: Sequence[Step]) -> str:
    """One line: the highest sustained rate and its figures."""
    sustained = [s for s in steps if s.sustained]
    if not sustained:
        return f"{scenario.name}: no rate was sustained"
    best = sustained[-1]
    more = (
        "" if best is steps[-1] else f" (failed or fell behind at {steps[-1].rate}/s)"
    )
    return (
        f"{scenario.name}: max sustained rate {best.rate}/s{more};"
        f" median {best.answeredPerSecond:,.0f} {scenario.unit}/s answered,"
        f" {best.cpuMsPerRequest:.3f} server CPU-ms per {scenario.unit},"
        f" median {best.median('retransmissions'):g} retransmissions"
    )


def treeVersion() -> str:
    """The checkout's commit, with ``-dirty`` for uncommitted changes.

    Read-only: ``--no-optional-locks`` keeps git from refreshing its index.
    """
    try:
        done = subprocess.run(
            ["git", "--no-optional-locks", "describe", "--always", "--dirty"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() or "unknown"


def findTwistd(given: str | None) -> str:
    """The twistd to run: the option, $PRESENCE_TWISTD, or a likely one.

    The likely ones: next to this Python, in $VIRTUAL_ENV, in the checkout's
    ``.venv``, in a ``venv`` beside the checkout, and on $PATH.
    """
    candidates = [
        given,
        os.environ.get("PRESENCE_TWISTD"),
        str(Path(sys.executable).parent / "twistd"),
        os.path.join(os.environ.get("VIRTUAL_ENV", "/nonexistent"), "bin", "twistd"),
        str(REPO / ".venv" / "bin" / "twistd"),
        str(REPO.parent / "venv" / "bin" / "twistd"),
        shutil.which("twistd"),
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise SystemExit("twistd not found: pass --twistd /path/to/venv/bin/twistd")


def compare() -> Any:
    """``bench/compare.py``, the side-by-side mode, sharing this module."""
    # compare.py imports "run": let it find this module, not a second copy
    # whose settings (--database, --admin) main() never set.
    sys.modules.setdefault("run", sys.modules[__name__])
    sys.path.insert(0, str(BENCH))
    import compare as module

    return module


def parseArguments(argv: Sequence[str]) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description="Load the presence server with sipp and report the figures."
    )
    parser.add_argument(
        "scenarios", nargs="*", metavar="scenario", help="scenarios to run (all)"
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per rate, at least 3 (3)"
    )
    parser.add_argument("--rates", help="comma-separated call rates to climb")
    parser.add_argument("--seconds", type=float, help="length of each run")
    parser.add_argument("--twistd", help="the twistd to run the server with")
    parser.add_argument(
        "--budget", type=float, default=30, help="minutes before climbing stops (30)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory"
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        type=Path,
        help="sample the server with py-spy during sipp runs; stacks go to DIR",
    )
    parser.add_argument(
        "--database",
        default="memory",
        help="the server's database setting: memory (default), sqlite:PATH,"
        " postgresql://user@host:port/name (cache mode unless --fallback2db)",
    )
    parser.add_argument(
        "--fallback2db",
        action="store_true",
        help="shared mode: every read and write goes to the database",
    )
    parser.add_argument(
        "--admin",
        choices=("on", "none"),
        default="on",
        help="run the server with its administration site on a free loopback"
        " port (on, the default, as deployed) or without one (none)",
    )
    parser.add_argument(
        "--scrape",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="with --admin on, fetch /metrics every SECONDS during each run",
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios")
    compare().addArguments(parser)
    options = parser.parse_args(argv)
    unknown = [
        name
        for name in options.scenarios
        if name not in SCENARIOS and name not in PROBES
    ]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; see --list")
    if options.repeats < 3:
        parser.error("--repeats must be at least 3")
    return options


def main(argv: Sequence[str]) -> int:
    """Run the scenarios asked for and print the table; 0 if a rate was sustained."""
    options = parseArguments(argv)
    global SERVER_CONFIG, ADMIN, SCRAPE
    ADMIN, SCRAPE = options.admin, options.scrape
    SERVER_CONFIG = (
        f'database = "{options.database}"\n'
        + ("fallback2db = true\n" if options.fallback2db else "")
        + LIMITS_OFF
    )
    if options.list:
        for s in SCENARIOS.values():
            print(f"{s.name:12} {s.xml:20} {s.description}")
        for p in PROBES.values():
            print(f"{p.name:12} {'load.py ' + p.mode:20} {p.description}")
        return 0
    twistd = findTwistd(options.twistd)
    if shutil.which("sipp") is None:
        raise SystemExit("sipp is not installed (Debian package sip-tester)")
    if options.reference:
        result: int = compare().main(options, twistd)
        return result
    names = options.scenarios or [*SCENARIOS, *PROBES]
    deadline = time.monotonic() + 60 * options.budget
    serverPin, sippPin = pinning()
    say(
        f"tree {treeVersion()}; twistd {twistd};"
        f" server on {serverPin[2:] or 'any core'},"
        f" sipp on {sippPin[2:] or 'any core'}"
    )
    tempdir = Path(tempfile.mkdtemp(prefix="presence-bench-"))
    allSteps: list[Step] = []
    probes: list[ProbeResult] = []
    lines: list[str] = []
    try:
        for name in names:
            if name in PROBES:
                probes.append(
                    runProbe(
                        PROBES[name], options.repeats, twistd, tempdir, options.quick
                    )
                )
                continue
            scenario = SCENARIOS[name]
            if options.rates:
                rates = tuple(int(r) for r in options.rates.split(","))
            else:
                rates = scenario.quickRates if options.quick else scenario.rates
            seconds = options.seconds or (
                scenario.quickSeconds if options.quick else scenario.seconds
            )
            steps = runScenario(
                scenario,
                rates,
                seconds,
                options.repeats,
                twistd,
                tempdir,
                deadline,
                options.profile,
            )
            allSteps.extend(steps)
            lines.append(summary(scenario, steps))
            if options.profile is not None:
                paths = sorted(options.profile.glob(f"{scenario.name}-r*.txt"))
                lines.append(f"{scenario.name}: py-spy profile ({len(paths)} runs)")
                lines.append(profileSummary(paths))
    finally:
        if options.keep:
            say(f"temporary files kept in {tempdir}")
        else:
            shutil.rmtree(tempdir, ignore_errors=True)
    print()
    if allSteps:
        print(f"Medians of {options.repeats} runs per rate:")
        print(table(allSteps))
        print()
    for line in lines:
        print(line)
    if probes:
        print()
        print(f"Probes: median (smallest-largest) of {options.repeats} runs:")
        print(probeReport(probes, options.repeats))
    sipped = not allSteps or any(s.sustained for s in allSteps)
    probed = all(len(p.runs) == options.repeats for p in probes)
    return 0 if sipped and probed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
