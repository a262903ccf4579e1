"""What digest authentication costs over real UDP sockets: server CPU per PUBLISH.

Run as ``python bench/authload.py`` (``--publishes`` per round, ``--rounds``,
``--users``, ``--window``). Two servers are started (``twistd -n presence``
on free loopback ports, as ``bench/run.py`` starts them), on SQLite
databases provisioned alike with ``presence-ctl``: one with
``authentication = false``, one with ``authentication = true`` (SHA-256 and
MD5 offered). The only difference between them is authentication.

The load generator is this process: each of ``--users`` users publishes
its own presence once (with authentication: is challenged once, answers
with nonce count 1), then, for the measured part, modifies it again and
again (PUBLISH with SIP-If-Match and a 400-byte PIDF), reusing the nonce
of that one challenge with a growing nonce count, as phones that keep
their nonce do; at most ``--window`` requests are outstanding. The
server's CPU time (user plus system, ``/proc/PID/stat``) is read before
and after each round; a round is ``--publishes`` PUBLISHes, each answered
200. Rounds alternate between the two servers (off, on, off, on, ...) so
that both see the same machine, and the medians of the rounds are
printed: CPU microseconds per PUBLISH, off and on, and their ratio. This
includes what the in-process ``bench/auth.py`` leaves out: the reactor,
the socket reads and writes, the kernel's share, and the credential
store's answers read from the database every few seconds (the cache's
lifetime).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Final

sys.path.insert(0, str(Path(__file__).parent))

import run

from presence.auth.digest import answerChallenge

PIDF: Final = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:{user}@{host}">\n'
    '  <tuple id="t8a2f3c">\n'
    "    <status><basic>{basic}</basic></status>\n"
    '    <contact priority="0.8">sip:{user}@192.0.2.10</contact>\n'
    "    <note>Available for calls</note>\n"
    "    <timestamp>2024-05-01T09:30:00Z</timestamp>\n"
    "  </tuple>\n"
    '  <note xml:lang="en">In the office until five</note>\n'
    "</presence>\n"
)
PASSWORD: Final = "authload password"
AUTH: Final = 'authentication = true\nauth_algorithms = ["SHA-256", "MD5"]\n'


class LoadServer(run.Server):
    """A server on SQLite with users provisioned, authentication on or off."""

    def startWith(self, auth: bool, users: list[str]) -> None:
        """Provision ``users`` and start, authentication as ``auth`` says."""
        config = run.SERVER_CONFIG.replace('"memory"', '"sqlite:presence.sqlite"')
        if auth:
            config += AUTH
        self.configPath.write_text(config)
        ctl = str(Path(self.twistd).with_name("presence-ctl"))
        options = ["--config", str(self.configPath)]
        run.subprocess.run(
            [ctl, *options, "db", "init"],
            cwd=self.workdir,
            stdout=run.subprocess.DEVNULL,
            check=True,
            timeout=60,
        )
        for user in users:
            run.subprocess.run(
                [
                    ctl,
                    *options,
                    "user",
                    "add",
                    "--password-stdin",
                    user + "@" + run.LOOPBACK,
                ],
                cwd=self.workdir,
                input=(PASSWORD + "\n").encode(),
                stdout=run.subprocess.DEVNULL,
                check=True,
                timeout=60,
            )
        saved = run.SERVER_CONFIG
        run.SERVER_CONFIG = config
        try:
            self.start()
        finally:
            run.SERVER_CONFIG = saved


class User:
    """One publisher: its socket, its publication's entity tag, its nonce."""

    def __init__(self, name: str, port: int) -> None:
        """Bind a socket; nothing published yet."""
        self.name = name
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((run.LOOPBACK, 0))
        self.sock.settimeout(5)
        self.local = self.sock.getsockname()[1]
        self.aor = f"sip:{name}@{run.LOOPBACK}"
        self.callId = f"{uuid.uuid4().hex}@{run.LOOPBACK}"
        self.cseq = 0
        self.etag: str | None = None
        self.challenge: str | None = None
        self.nc = 0
        self.sent = 0

    def publish(self) -> None:
        """Send the next PUBLISH: a modification once there is an entity tag."""
        self.cseq += 1
        self.sent += 1
        basic = "open" if self.sent % 2 else "closed"
        body = PIDF.format(user=self.name, host=run.LOOPBACK, basic=basic).encode()
        lines = [
            f"PUBLISH {self.aor} SIP/2.0",
            f"Via: SIP/2.0/UDP {run.LOOPBACK}:{self.local}"
            f";branch=z9hG4bK{uuid.uuid4().hex[:16]};rport",
            "Max-Forwards: 70",
            f"To: <{self.aor}>",
            f"From: <{self.aor}>;tag=al{self.local}",
            f"Call-ID: {self.callId}",
            f"CSeq: {self.cseq} PUBLISH",
            "Event: presence",
            "Expires: 3600",
            "Content-Type: application/pidf+xml",
        ]
        if self.etag is not None:
            lines.append(f"SIP-If-Match: {self.etag}")
        if self.challenge is not None:
            self.nc += 1
            lines.append(
                "Authorization: "
                + answerChallenge(
                    self.challenge, self.name, PASSWORD, "PUBLISH", self.aor, self.nc
                )
            )
        head = "\r\n".join(lines) + f"\r\nContent-Length: {len(body)}\r\n\r\n"
        self.sock.sendto(head.encode() + body, (run.LOOPBACK, self.port))

    def receive(self) -> int:
        """Read the response; keep its entity tag or challenge; its status."""
        while True:
            data = self.sock.recv(65535)
            if data.startswith(b"SIP/2.0 ") and f"CSeq: {self.cseq} ".encode() in data:
                break
        status = int(data[8:11])
        for line in data.split(b"\r\n\r\n", 1)[0].decode().split("\r\n"):
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "sip-etag":
                self.etag = value.strip()
            elif name == "www-authenticate" and status == 401 and "SHA-256" in value:
                self.challenge = value.strip()
                self.nc = 0
        return status


def prepare(port: int, names: list[str]) -> list[User]:
    """Each user's first PUBLISH accepted (challenged once when it must be)."""
    users = [User(name, port) for name in names]
    for user in users:
        for _ in range(3):
            user.publish()
            status = user.receive()
            if status == 200:
                break
            if status != 401:
                raise RuntimeError(f"{user.name}: {status} to PUBLISH")
        else:
            raise RuntimeError(f"{user.name}: never accepted")
    return users


def round_(server: LoadServer, users: list[User], publishes: int, window: int) -> float:
    """CPU microseconds of the server per PUBLISH, over ``publishes`` of them."""
    active = users[:window]
    before = run.cpuSeconds(server.pid)
    sent = 0
    while sent < publishes:
        batch = active[: publishes - sent]
        for user in batch:
            user.publish()
        for user in batch:
            status = user.receive()
            if status != 200:
                raise RuntimeError(f"{user.name}: {status} to PUBLISH")
        sent += len(batch)
    # The last datagrams are answered before the CPU is read (each was).
    after = run.cpuSeconds(server.pid)
    return (after - before) * 1e6 / publishes


def main() -> None:
    """Start both servers, run interleaved rounds, print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--publishes", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--window", type=int, default=8)
    options = parser.parse_args()
    twistd = str(Path(sys.executable).with_name("twistd"))
    names = [f"load{i}" for i in range(options.users)]
    results: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="authload-") as tmp:
        servers: dict[str, LoadServer] = {}
        try:
            for mode in ("off", "on"):
                workdir = Path(tmp) / mode
                workdir.mkdir()
                server = servers[mode] = LoadServer(twistd, workdir, [])
                server.startWith(mode == "on", names)
            users = {mode: prepare(s.port, names) for mode, s in servers.items()}
            # A warm-up round each, not counted.
            for mode in ("off", "on"):
                round_(servers[mode], users[mode], 500, options.window)
            for _ in range(options.rounds):
                for mode in ("off", "on"):
                    cost = round_(
                        servers[mode], users[mode], options.publishes, options.window
                    )
                    results[mode].append(cost)
                    print(f"{mode:3} {cost:8.1f} us CPU per PUBLISH", flush=True)
                time.sleep(0.5)
        finally:
            for server in servers.values():
                server.stop()
    off = statistics.median(results["off"])
    on = statistics.median(results["on"])
    print(
        f"medians: off {off:.1f} us, on {on:.1f} us per PUBLISH;"
        f" on/off {on / off:.3f} (+{(on / off - 1) * 100:.1f}%)"
    )


if __name__ == "__main__":
    main()
