"""Side by side: the same scenarios against this server and a reference server.

Run by ``bench/run.py --reference HOST:PORT`` (or directly, with the same
options)::

    python bench/run.py --reference 127.0.0.1:25060 --reference-pidfile PATH
    python bench/run.py --reference 127.0.0.1:25060 --reference-pidfile PATH
        --reference-reset "kamailio.sh reset mem 4 25060" publish memory

The reference is a presence server someone else started on a loopback UDP
port (a Kamailio with its presence modules, for example).  Its CPU time and
memory are read from ``/proc`` for its main process and every descendant (a
Kamailio's workers), so ``--reference-pid`` or ``--reference-pidfile`` must
name the main process.  ``--reference-reset`` is a shell command run before
every measurement of the reference (and the pid file read again after it),
so that the reference starts each one empty, as this server does: every
measurement of this server starts a fresh ``twistd presence``.

The figures, in ``--rounds`` interleaved rounds (this server first in odd
rounds, the reference first in even ones), medians printed with the ratio
this server / reference:

- ``publish``: initial PUBLISHes (``bench/scenarios/publish.xml``) in a
  closed loop, sipp keeping ``--window`` calls outstanding: server CPU-ms per
  PUBLISH and PUBLISH/s.
- ``subscribe``: subscribe cycles (``subscribe-cycle.xml``: SUBSCRIBE, NOTIFY,
  un-SUBSCRIBE, NOTIFY) the same way: server CPU-ms per cycle and cycles/s.
- ``fanout1k``, ``fanout5k``: ``load.py fanout``: one PUBLISH to the last of
  1,000 / 5,000 NOTIFYs.
- ``memory``: ``load.py memory`` over UDP, every subscription with its own
  presentity and watcher: PSS per subscription between ``--memory-first``
  and ``--memory-total`` subscriptions, ``--memory-settle`` seconds after
  each set-up.
- ``latency``: ``load.py latency``: initial PUBLISHes at a steady 200/s for
  10 s, p50 and p99.

With ``--baseline-twistd PATH`` (the ``twistd`` of another build, for
example the tree before a change installed in a virtual environment of its
own) that build is measured in the same rounds as a third side, and the
table gains its column and the ratios after / before.

It uses the standard library only, and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

sys.path.insert(0, str(Path(__file__).resolve().parent))

import load
import run

#: How long the reference may take to answer an OPTIONS after a reset.
READY_TIMEOUT: Final = 20.0


class Reference:
    """The reference server: a loopback UDP port and a process tree."""

    def __init__(
        self,
        port: int,
        pid: int | None,
        pidfile: Path | None,
        reset: str | None,
    ) -> None:
        """Name the server; nothing is started or signalled here."""
        self.port = port
        self._pid = pid
        self.pidfile = pidfile
        self.reset = reset

    @property
    def pid(self) -> int:
        """The main process (from the pid file when one is given)."""
        if self.pidfile is not None:
            return int(self.pidfile.read_text().split()[0])
        assert self._pid is not None
        return self._pid

    def cpuSeconds(self) -> float:
        """User plus system CPU seconds of the main process and descendants."""
        return load.cpuSeconds(self.pid)

    def rssMiB(self) -> float:
        """PSS of the process tree in MiB (its shared memory counted once)."""
        return load.pssKiB(self.pid) / 1024

    def prepare(self) -> None:
        """Run the reset command, if any, and wait for an OPTIONS 200."""
        if self.reset:
            subprocess.run(
                self.reset,
                shell=True,
                check=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                timeout=120,
            )
        if not answersOptions(self.port, READY_TIMEOUT):
            raise RuntimeError(f"the reference on port {self.port} does not answer")


def answersOptions(port: int, seconds: float) -> bool:
    """Whether an OPTIONS to 127.0.0.1:port gets a 200 within ``seconds``."""
    deadline = time.monotonic() + seconds
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((run.LOOPBACK, 0))
        probe.settimeout(0.2)
        while time.monotonic() < deadline:
            branch = "z9hG4bK" + uuid.uuid4().hex[:16]
            request = run.optionsRequest(port, probe.getsockname()[1], branch)
            probe.sendto(request, (run.LOOPBACK, port))
            try:
                data = probe.recv(65535)
            except TimeoutError:
                continue
            if data.startswith(b"SIP/2.0 200"):
                return True
    return False


@dataclass(frozen=True)
class Settings:
    """The sizes of the measurements."""

    publishCalls: int = 30000
    cycleCalls: int = 8000
    window: int = 100
    memoryFirst: int = 10000
    memoryTotal: int = 50000
    memorySettle: float = 6.0
    latencySeconds: float = 10.0


#: A measurement: given the server (ours or the reference), a work directory
#: and the settings, its figures by name.
Measure = Callable[[object, Path, Settings], dict[str, float]]


def sippFigures(
    scenarioName: str, callsOf: Callable[[Settings], int], unit: str
) -> Callable[[object, Path, Settings], dict[str, float]]:
    """A closed-loop sipp measurement of a scenario of `run.SCENARIOS`."""

    def measure(server: object, workdir: Path, settings: Settings) -> dict[str, float]:
        scenario = run.SCENARIOS[scenarioName]
        _, sippPin = run.pinning()
        count = callsOf(settings)
        result = run.runSipp(
            scenario,
            server,  # type: ignore[arg-type]
            100000,
            count,
            workdir,
            sippPin,
            None,
            ("-l", str(settings.window)),
        )
        for note in result.notes:
            run.say(f"    note: {note}")
        figures = {
            f"cpu-ms per {unit}": (
                1000 * result.serverCPU / result.successful
                if result.successful
                else float("nan")
            ),
            f"{unit}/s": result.answeredPerSecond,
        }
        if result.failed:
            figures["failed calls"] = float(result.failed)
        return figures

    return measure


def loadFigures(
    mode: str, args: Callable[[Settings], list[str]], keys: dict[str, str]
) -> Callable[[object, Path, Settings], dict[str, float]]:
    """A ``load.py`` measurement; ``keys`` maps its JSON keys to figure names."""

    def measure(server: object, workdir: Path, settings: Settings) -> dict[str, float]:
        _, clientPin = run.pinning()
        command = [
            *clientPin,
            sys.executable,
            str(run.BENCH / "load.py"),
            mode,
            "--port",
            str(server.port),  # type: ignore[attr-defined]
            "--pid",
            str(server.pid),  # type: ignore[attr-defined]
            *args(settings),
        ]
        with (workdir / "load.err").open("wb") as errors:
            done = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=errors,
                timeout=900,
                check=False,
            )
        lines = done.stdout.decode(errors="replace").strip().splitlines()
        if done.returncode or not lines:
            tail = (workdir / "load.err").read_text(errors="replace")[-400:]
            run.say(f"    note: load.py exited {done.returncode}: {tail}")
            return {}
        raw = json.loads(lines[-1])
        for key in ("failures", "unexpected"):
            if raw.get(key):
                run.say(f"    note: {key}: {raw[key]}")
        return {
            name: float(raw[key])
            for key, name in keys.items()
            if isinstance(raw.get(key), int | float)
        }

    return measure


#: The measurements, by name, in the order they run.
MEASUREMENTS: Final[dict[str, Measure]] = {
    "publish": sippFigures("publish", lambda s: s.publishCalls, "PUBLISH"),
    "subscribe": sippFigures("subscribe", lambda s: s.cycleCalls, "cycle"),
    "fanout1k": loadFigures(
        "fanout",
        lambda s: ["--watchers", "1000"],
        {"lastNotifyMs": "ms to the last of 1,000 NOTIFYs"},
    ),
    "fanout5k": loadFigures(
        "fanout",
        lambda s: ["--watchers", "5000"],
        {"lastNotifyMs": "ms to the last of 5,000 NOTIFYs"},
    ),
    "memory": loadFigures(
        "memory",
        lambda s: [
            "--transport",
            "udp",
            "--presentities",
            "0",
            "--first",
            str(s.memoryFirst),
            "--total",
            str(s.memoryTotal),
            "--settle",
            str(s.memorySettle),
        ],
        {
            "pssBytesPerSubscription": "PSS bytes per subscription",
            "bytesPerSubscription": "RSS bytes per subscription",
        },
    ),
    "latency": loadFigures(
        "latency",
        lambda s: ["--rate", "200", "--seconds", str(s.latencySeconds)],
        {"p50ms": "PUBLISH p50 ms at 200/s", "p99ms": "PUBLISH p99 ms at 200/s"},
    ),
}


@dataclass
class Figures:
    """Every round's figures of one side, by figure name."""

    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, figures: dict[str, float]) -> None:
        """Record one measurement's figures."""
        for name, value in figures.items():
            self.values.setdefault(name, []).append(value)

    def median(self, name: str) -> float | None:
        """The median over the rounds, or None if never measured."""
        values = self.values.get(name)
        return statistics.median(values) if values else None


def measureOurs(
    measure: Measure, twistd: str, workdir: Path, settings: Settings
) -> dict[str, float]:
    """One measurement against a fresh server of ours, pinned to one core."""
    serverPin, _ = run.pinning()
    with run.runningServer(twistd, workdir, serverPin, ()) as server:
        return measure(server, workdir, settings)


def compare(
    names: Sequence[str],
    reference: Reference,
    twistd: str,
    rounds: int,
    settings: Settings,
    tempdir: Path,
    baseline: str | None = None,
) -> tuple[Figures, Figures, Figures]:
    """Run the measurements in interleaved rounds.

    With ``baseline`` (another build's ``twistd``), that build is measured
    in the same rounds too, so that a change is compared with the tree
    before it and with the reference in one run.

    Returns:
        This server's figures, the reference's and the baseline's (empty
        without one).
    """
    ours, theirs, before = Figures(), Figures(), Figures()
    for roundNumber in range(1, rounds + 1):
        for name in names:
            measure = MEASUREMENTS[name]
            sides = ["ours", "reference"] + (["baseline"] if baseline else [])
            if roundNumber % 2 == 0:
                sides.reverse()
            for side in sides:
                workdir = tempdir / f"{name}-{side}-{roundNumber}"
                workdir.mkdir()
                try:
                    if side == "ours":
                        figures = measureOurs(measure, twistd, workdir, settings)
                        ours.add(figures)
                    elif side == "baseline":
                        assert baseline is not None
                        figures = measureOurs(measure, baseline, workdir, settings)
                        before.add(figures)
                    else:
                        reference.prepare()
                        figures = measure(reference, workdir, settings)
                        theirs.add(figures)
                except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                    run.say(f"  round {roundNumber}/{rounds} {name} {side}: {e}")
                    continue
                run.say(
                    f"  round {roundNumber}/{rounds} {name} {side}: "
                    + ", ".join(f"{k} {v:,.3f}" for k, v in figures.items())
                )
    return ours, theirs, before


def ratio(mine: float | None, other: float | None) -> str:
    """``mine / other`` with two decimals, or ``-``."""
    if mine is None or not other:
        return "-"
    return f"{mine / other:.2f}"


def report(ours: Figures, theirs: Figures, rounds: int, before: Figures) -> str:
    """The table: medians of the rounds and the ratio ours / reference.

    With a baseline's figures, its column and the ratios to it come too.
    """
    names = list(dict.fromkeys([*ours.values, *theirs.values, *before.values]))
    lines = [f"Medians of {rounds} interleaved rounds:"]
    if before.values:
        lines += [
            "| figure | reference | baseline | this server"
            " | baseline / reference | this server / reference"
            " | this server / baseline |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
    else:
        lines += [
            "| figure | reference | this server | this server / reference |",
            "| --- | --- | --- | --- |",
        ]
    for name in names:
        mine, other, old = ours.median(name), theirs.median(name), before.median(name)
        if before.values:
            lines.append(
                f"| {name} | {number(other)} | {number(old)} | {number(mine)}"
                f" | {ratio(old, other)} | {ratio(mine, other)} | {ratio(mine, old)} |"
            )
        else:
            lines.append(
                f"| {name} | {number(other)} | {number(mine)} | {ratio(mine, other)} |"
            )
    return "\n".join(lines)


def number(value: float | None) -> str:
    """A figure with as many digits as it deserves."""
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:,.2f}"
    return f"{value:.3f}"


def addArguments(parser: argparse.ArgumentParser) -> None:
    """The side-by-side options (shared with ``run.py``)."""
    parser.add_argument(
        "--reference",
        metavar="HOST:PORT",
        help="compare with the presence server on this loopback UDP address",
    )
    parser.add_argument(
        "--reference-pid", type=int, help="the reference's main process"
    )
    parser.add_argument(
        "--reference-pidfile",
        type=Path,
        help="a file holding the reference's main process id (read each time)",
    )
    parser.add_argument(
        "--reference-reset",
        metavar="COMMAND",
        help="shell command run before each measurement of the reference",
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument(
        "--window", type=int, default=100, help="sipp calls outstanding (100)"
    )
    parser.add_argument(
        "--baseline-twistd",
        metavar="PATH",
        help="also measure the server this twistd runs (another build) in"
        " the same rounds",
    )
    parser.add_argument("--publish-calls", type=int, default=30000)
    parser.add_argument("--cycle-calls", type=int, default=8000)
    parser.add_argument("--memory-first", type=int, default=10000)
    parser.add_argument("--memory-total", type=int, default=50000)
    parser.add_argument("--memory-settle", type=float, default=6.0)


def main(options: argparse.Namespace, twistd: str) -> int:
    """Run the comparison the options ask for; 0 if every figure was measured."""
    host, _, port = options.reference.rpartition(":")
    if host not in (run.LOOPBACK, "localhost") or not port.isdigit():
        raise SystemExit("--reference must be 127.0.0.1:PORT (loopback UDP)")
    if options.reference_pid is None and options.reference_pidfile is None:
        raise SystemExit("--reference needs --reference-pid or --reference-pidfile")
    names = [n for n in options.scenarios if n in MEASUREMENTS] or list(MEASUREMENTS)
    unknown = [n for n in options.scenarios if n not in MEASUREMENTS]
    if unknown:
        raise SystemExit(
            f"not measured side by side: {', '.join(unknown)};"
            f" choose from {', '.join(MEASUREMENTS)}"
        )
    quick = options.quick
    settings = Settings(
        publishCalls=2000 if quick else options.publish_calls,
        cycleCalls=500 if quick else options.cycle_calls,
        window=options.window,
        memoryFirst=1000 if quick else options.memory_first,
        memoryTotal=3000 if quick else options.memory_total,
        memorySettle=1.0 if quick else options.memory_settle,
        latencySeconds=3.0 if quick else 10.0,
    )
    reference = Reference(
        int(port),
        options.reference_pid,
        options.reference_pidfile,
        options.reference_reset,
    )
    run.say(
        f"tree {run.treeVersion()}; reference 127.0.0.1:{port};"
        f" measurements {' '.join(names)}; {options.rounds} rounds;"
        f" reset: {shlex.quote(options.reference_reset or '(none)')}"
    )
    tempdir = Path(tempfile.mkdtemp(prefix="presence-compare-"))
    try:
        ours, theirs, before = compare(
            names,
            reference,
            twistd,
            options.rounds,
            settings,
            tempdir,
            options.baseline_twistd,
        )
    finally:
        if not options.keep:
            subprocess.run(["rm", "-rf", str(tempdir)], check=False)
        else:
            run.say(f"temporary files kept in {tempdir}")
    print()
    print(report(ours, theirs, options.rounds, before))
    complete = all(
        len(v) == options.rounds
        for f in (ours, theirs, before)
        for v in f.values.values()
    )
    return 0 if complete else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scenarios", nargs="*", metavar="measurement")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--twistd")
    addArguments(parser)
    arguments = parser.parse_args()
    if not arguments.reference:
        parser.error("--reference HOST:PORT is needed")
    sys.exit(main(arguments, run.findTwistd(arguments.twistd)))
