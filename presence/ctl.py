"""``presence-ctl``: the operator's command for the server's database.

    presence-ctl [--config FILE] [--database URL] db init
    presence-ctl [--config FILE] [--database URL] db upgrade
    presence-ctl [--config FILE] [--database URL] db dump

It reads the same configuration file as the server. ``init`` creates the
tables that are missing, ``upgrade`` brings an older schema to this version (or
says there is nothing to do), ``dump`` prints the presentities, subscriptions,
watchers and bindings the database holds.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, ClassVar, TextIO

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.python import usage

from presence.config import ConfigError, databaseKind, fromMapping, loadFile, sqlitePath
from presence.status import STATUS_NAMES
from presence.storage.errors import StorageError


class DatabaseOptions(usage.Options):
    """Options of ``presence-ctl db``."""

    synopsis = "presence-ctl db init|upgrade|dump"

    def parseArgs(self, action: str) -> None:  # type: ignore[override]  # usage.Options counts these arguments
        """Take the action."""
        if action not in ("init", "upgrade", "dump"):
            raise usage.UsageError(f"unknown action {action!r}: init, upgrade or dump")
        self["action"] = action


class Options(usage.Options):
    """Options of ``presence-ctl``."""

    synopsis = "presence-ctl [--config FILE] [--database URL] db init|upgrade|dump"
    longdesc = (
        "Manage the presence server's database: init creates the missing"
        " tables, upgrade checks the schema version, dump prints the rows."
    )
    optParameters: ClassVar[list[list[Any]]] = [
        ["config", "c", None, "The server's TOML configuration file."],
        ["database", None, None, "The database, overriding the file's."],
    ]
    subCommands: ClassVar[list[list[Any]]] = [
        ["db", None, DatabaseOptions, "Create, upgrade or dump the database."]
    ]

    def postOptions(self) -> None:
        """Work out the database setting."""
        if self.subCommand is None:
            raise usage.UsageError("a command is needed: db init|upgrade|dump")
        try:
            config = loadFile(self["config"]) if self["config"] else fromMapping({})
            if self["database"]:
                config = fromMapping({"database": self["database"]}, config)
            config.validate()
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        if databaseKind(config.database) == "memory":
            raise usage.UsageError("the database is memory: there is nothing to manage")
        self["url"] = config.database


def openDatabase(url: str, reactor: Any) -> Any:
    """The SQL store of a database setting."""
    if databaseKind(url) == "sqlite":
        from presence.storage.sqlite import SQLiteStore

        return SQLiteStore(sqlitePath(url), reactor=reactor)
    from presence.storage.postgres import PostgresStore

    return PostgresStore(url, reactor=reactor)


def _when(seconds: float, now: float) -> str:
    left = int(seconds - now)
    return f"in {left}s" if left >= 0 else f"{-left}s ago"


def dump(rows: Any, out: TextIO, now: float) -> None:
    """Write the rows of ``loadAll`` as text.

    Args:
        rows: what ``loadAll`` returned.
        out: where the text goes.
        now: the time expiries are told relative to, in seconds since the
            epoch.
    """
    publications, subscriptions, watchers, bindings = rows
    out.write(f"presentity: {len(publications)} publications\n")
    for p in sorted(publications, key=lambda p: (p.presentity, p.event)):
        out.write(
            f"  {p.presentity} {p.event} etag={p.etag} expires {_when(p.expires, now)}"
            f" {len(p.body)} bytes {p.contentType}\n"
        )
    out.write(f"active_watchers: {len(subscriptions)} subscriptions\n")
    for s in sorted(subscriptions, key=lambda s: (s.presentity, s.event, s.watcher)):
        status = STATUS_NAMES.get(s.status, str(s.status))
        out.write(
            f"  {s.presentity} {s.event} <- {s.watcher} {status}"
            f" expires {_when(s.expires, now)} cseq={s.localCSeq} contact={s.contact}\n"
        )
    out.write(f"watchers: {len(watchers)} rows\n")
    for w in sorted(watchers, key=lambda w: w.key):
        status = STATUS_NAMES.get(w.status, str(w.status))
        out.write(
            f"  {w.presentity} {w.event} <- {w.watcherUsername}@{w.watcherDomain}"
            f" {status}{f' ({w.reason})' if w.reason else ''}\n"
        )
    out.write(f"location: {len(bindings)} bindings\n")
    for b in sorted(bindings, key=lambda b: (b.aor, b.contact)):
        out.write(f"  {b.aor} -> {b.contact} expires {_when(b.expires, now)}\n")


async def run(options: Options, reactor: Any, out: TextIO) -> int:
    """Carry out the command; return the exit status."""
    action = options.subOptions["action"]
    database = openDatabase(options["url"], reactor)
    try:
        await database.start()
        if action == "init":
            await database.ensureSchema(True)
            out.write(f"schema ready in {options['url']}\n")
        elif action == "upgrade":
            await database.ensureSchema(False)
            out.write("schema is at this server's version: nothing to upgrade\n")
        else:
            await database.ensureSchema(False)
            dump(await database.loadAll(), out, reactor.seconds())
    except StorageError as e:
        hint = "" if action == "init" else " (presence-ctl db init creates it)"
        sys.stderr.write(f"presence-ctl: {e}{hint}\n")
        return 1
    finally:
        await database.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """The console script."""
    options = Options()
    try:
        options.parseOptions(list(sys.argv[1:] if argv is None else argv))
    except usage.UsageError as e:
        sys.stderr.write(f"presence-ctl: {e}\n{options}")
        raise SystemExit(2) from None

    async def go(reactor: Any) -> None:
        status = await run(options, reactor, sys.stdout)
        if status:
            raise SystemExit(status)

    task.react(lambda reactor: Deferred.fromCoroutine(go(reactor)))


if __name__ == "__main__":
    main()
