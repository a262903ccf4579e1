"""``presence-ctl``: the operator's command for the server and its database.

    presence-ctl [--config FILE] [--database URL] db init
    presence-ctl [--config FILE] [--database URL] db upgrade
    presence-ctl [--config FILE] [--database URL] db dump
    presence-ctl [--config FILE] [--url URL] show URI
    presence-ctl [--config FILE] [--url URL] subscriptions [--event E]
    presence-ctl [--config FILE] [--url URL] refresh-watchers URI [--event E] [--type N]
    presence-ctl [--config FILE] [--url URL] stats [NAME...]

It reads the same configuration file as the server. The ``db`` commands work
on the database itself: ``init`` creates the tables that are missing,
``upgrade`` brings an older schema to this version (or says there is nothing
to do), ``dump`` prints the presentities, subscriptions, watchers and
bindings the database holds. The others ask the running server, over XML-RPC
at its ``admin_listen`` address (or ``--url``): ``show`` prints a
presentity's publications, subscriptions and watchers, ``subscriptions``
every subscription, ``refresh-watchers`` has the server notify a
presentity's watchers again, ``stats`` prints the server's counters.
"""

from __future__ import annotations

import sys
import xmlrpc.client
from collections.abc import Sequence
from typing import Any, ClassVar, Final, TextIO

from treq.client import HTTPClient
from twisted.internet import error, task
from twisted.internet.defer import Deferred, TimeoutError
from twisted.python import usage
from twisted.web.client import Agent
from twisted.web.http_headers import Headers

from presence.config import (
    ConfigError,
    adminURL,
    databaseKind,
    fromMapping,
    loadFile,
    sqlitePath,
)
from presence.status import STATUS_NAMES
from presence.storage.errors import StorageError

#: Seconds to wait for the server to answer one call.
CALL_TIMEOUT: Final = 30.0


class DatabaseOptions(usage.Options):
    """Options of ``presence-ctl db``."""

    synopsis = "presence-ctl db init|upgrade|dump"

    def parseArgs(self, action: str) -> None:  # type: ignore[override]  # usage.Options counts these arguments
        """Take the action."""
        if action not in ("init", "upgrade", "dump"):
            raise usage.UsageError(f"unknown action {action!r}: init, upgrade or dump")
        self["action"] = action


class ShowOptions(usage.Options):
    """Options of ``presence-ctl show``."""

    synopsis = "presence-ctl show URI"

    def parseArgs(self, uri: str) -> None:  # type: ignore[override]  # usage.Options counts these arguments
        """Take the presentity."""
        self["uri"] = uri


class SubscriptionsOptions(usage.Options):
    """Options of ``presence-ctl subscriptions``."""

    synopsis = "presence-ctl subscriptions [--event E]"
    optParameters: ClassVar[list[list[Any]]] = [
        ["event", "e", None, "Only the subscriptions to this event package."],
    ]


def optionsFirst(argv: Sequence[str], withValue: Sequence[str]) -> list[str]:
    """The arguments with the options moved before the others.

    ``usage.Options`` stops at the first argument that is not an option;
    this lets ``refresh-watchers URI --event E`` be written as documented.

    Args:
        argv: the arguments.
        withValue: the options that take a value (``--event``, ``-e``).
    """
    options: list[str] = []
    others: list[str] = []
    items = iter(argv)
    for arg in items:
        if arg == "--":
            others.extend(items)
        elif arg.startswith("-") and arg != "-":
            options.append(arg)
            value = next(items, None) if arg in withValue else None
            if value is not None:
                options.append(value)
        else:
            others.append(arg)
    return [*options, "--", *others] if others else options


class RefreshOptions(usage.Options):
    """Options of ``presence-ctl refresh-watchers``."""

    synopsis = "presence-ctl refresh-watchers URI [--event E] [--type N]"
    optParameters: ClassVar[list[list[Any]]] = [
        ["event", "e", "presence", "The event package."],
        [
            "type",
            "t",
            1,
            "OpenSIPS's refresh type: 0 the rules changed, 1 the state changed"
            " (both re-send the stored state until privacy rules exist).",
            int,
        ],
    ]

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """Parse, with the options anywhere."""
        argv = sys.argv[1:] if options is None else options
        super().parseOptions(optionsFirst(argv, ("--event", "-e", "--type", "-t")))

    def parseArgs(self, uri: str) -> None:  # type: ignore[override]  # usage.Options counts these arguments
        """Take the presentity."""
        self["uri"] = uri


class StatsOptions(usage.Options):
    """Options of ``presence-ctl stats``."""

    synopsis = "presence-ctl stats [NAME...]"

    def parseArgs(self, *names: str) -> None:
        """Take the statistics wanted: ``group:name`` or ``group:``; all if none."""
        self["names"] = list(names)


#: The commands that ask the running server.
SERVER_COMMANDS: Final = ("show", "subscriptions", "refresh-watchers", "stats")


class Options(usage.Options):
    """Options of ``presence-ctl``."""

    synopsis = (
        "presence-ctl [--config FILE] [--database URL] [--url URL]"
        " db init|upgrade|dump | show URI | subscriptions | refresh-watchers URI"
        " | stats"
    )
    longdesc = (
        "Manage the presence server's database (db: init creates the missing"
        " tables, upgrade checks the schema version, dump prints the rows), or"
        " ask the running server through its administration site (show,"
        " subscriptions, refresh-watchers, stats)."
    )
    optParameters: ClassVar[list[list[Any]]] = [
        ["config", "c", None, "The server's TOML configuration file."],
        ["database", None, None, "The database, overriding the file's."],
        [
            "url",
            None,
            None,
            "The server's XML-RPC URL, overriding the file's admin_listen"
            " (http://127.0.0.1:8080/RPC2).",
        ],
    ]
    subCommands: ClassVar[list[list[Any]]] = [
        ["db", None, DatabaseOptions, "Create, upgrade or dump the database."],
        ["show", None, ShowOptions, "A presentity's state in the running server."],
        ["subscriptions", None, SubscriptionsOptions, "Every subscription."],
        [
            "refresh-watchers",
            None,
            RefreshOptions,
            "Notify a presentity's watchers again.",
        ],
        ["stats", None, StatsOptions, "The running server's counters."],
    ]

    def postOptions(self) -> None:
        """Work out the database setting, or the server's address."""
        if self.subCommand is None:
            raise usage.UsageError(
                "a command is needed: db init|upgrade|dump, show, subscriptions,"
                " refresh-watchers or stats"
            )
        try:
            config = loadFile(self["config"]) if self["config"] else fromMapping({})
            if self["database"]:
                config = fromMapping({"database": self["database"]}, config)
            config.validate()
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        if self.subCommand in SERVER_COMMANDS:
            if not self["url"]:
                try:
                    self["url"] = adminURL(config.adminListen)
                except ConfigError as e:
                    raise usage.UsageError(f"{e} (give --url)") from None
            return
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


# -- the running server ----------------------------------------------------------


class CtlError(Exception):
    """A command failed; the message is the one line to print."""


class AdminClient:
    """Calls the server's XML-RPC methods (the marshalling is the stdlib's)."""

    def __init__(self, url: str, reactor: Any, timeout: float = CALL_TIMEOUT) -> None:
        """Call the server at ``url``, on ``reactor``."""
        self.url = url
        self.reactor = reactor
        self.timeout = timeout
        self.http = HTTPClient(Agent(reactor, connectTimeout=timeout))

    async def call(self, method: str, *args: Any) -> Any:
        """Call ``method``; return its result.

        Raises:
            CtlError: the server cannot be reached, or answered a fault or
                something that is not XML-RPC.
        """
        body = xmlrpc.client.dumps(args, method, allow_none=False).encode()
        try:
            posted = self.http.post(
                self.url, data=body, headers=Headers({b"Content-Type": [b"text/xml"]})
            )
            posted.addTimeout(self.timeout, self.reactor)
            response = await posted
            read = response.content()
            read.addTimeout(self.timeout, self.reactor)
            content = await read
        except error.ConnectionRefusedError:
            raise self._unreachable("connection refused") from None
        except (TimeoutError, error.TimeoutError):
            raise self._unreachable("no answer in time") from None
        except Exception as e:
            raise self._unreachable(_reason(e)) from None
        if response.code != 200:
            raise CtlError(
                f"the presence server at {self.url} answered HTTP {response.code}:"
                " is this the server's admin_listen address?"
            )
        try:
            (result,), _ = xmlrpc.client.loads(content, use_builtin_types=True)
        except xmlrpc.client.Fault as fault:
            raise CtlError(
                f"the server refused: {fault.faultString} (fault {fault.faultCode})"
            ) from None
        except Exception as e:
            raise CtlError(
                f"the presence server at {self.url} did not answer XML-RPC: {e}"
            ) from None
        return result

    def _unreachable(self, why: str) -> CtlError:
        return CtlError(f"cannot reach the presence server at {self.url}: {why}")

    async def everything(self, method: str, *args: Any) -> list[dict[str, Any]]:
        """Every entry of a listing, page after page."""
        entries: list[dict[str, Any]] = []
        cursor = ""
        while True:
            # The server's default limit: its largest page.
            page = await self.call(method, *args, cursor, "")
            entries.extend(page["entries"])
            cursor = page["next"]
            if not cursor:
                return entries


def _reason(e: Exception) -> str:
    """A short reason for a failed connection (treq wraps some in lists)."""
    reasons = getattr(e, "reasons", None)
    if reasons:
        return "; ".join(r.getErrorMessage() for r in reasons)
    return str(e) or type(e).__name__


def _subscriptionLine(s: dict[str, Any], now: float) -> str:
    event = s["event"] + (f";id={s['event_id']}" if s["event_id"] else "")
    owner = f" owner={s['owner']}" if s["owner"] else ""
    reason = f" ({s['reason']})" if s["reason"] else ""
    return (
        f"{event} <- {s['watcher']} {s['status']}{reason}"
        f" expires {_when(s['expires'], now)} contact={s['contact']}"
        f" transport={s['transport'] or '-'}{owner}"
    )


async def show(client: AdminClient, uri: str, out: TextIO, now: float) -> None:
    """Print a presentity's publications, subscriptions and watchers."""
    publications = await client.everything("pres_phtable_list", uri, "")
    subscriptions = await client.everything("subs_phtable_list", uri, "")
    watchers = await client.everything("pres_watchers_list", uri, "")
    out.write(f"{uri}\n")
    out.write(f"publications: {len(publications)}\n")
    for p in publications:
        sender = f" sender={p['sender']}" if p["sender"] else ""
        out.write(
            f"  {p['event']} etag={p['etag']} expires {_when(p['expires'], now)}"
            f" {p['content_type']}{sender}\n"
        )
    out.write(f"subscriptions: {len(subscriptions)}\n")
    for s in subscriptions:
        out.write(f"  {_subscriptionLine(s, now)}\n")
    out.write(f"watchers: {len(watchers)}\n")
    for w in watchers:
        reason = f" ({w['reason']})" if w["reason"] else ""
        out.write(f"  {w['event']} <- {w['watcher']} {w['status']}{reason}\n")


async def runServerCommand(
    options: Options, reactor: Any, out: TextIO, err: TextIO
) -> int:
    """Carry out a command that asks the running server; the exit status."""
    client = AdminClient(options["url"], reactor)
    command, sub = options.subCommand, options.subOptions
    now = reactor.seconds()
    try:
        if command == "show":
            await show(client, sub["uri"], out, now)
        elif command == "subscriptions":
            rows = await client.everything("subs_phtable_list", "", sub["event"] or "")
            for s in rows:
                out.write(f"{s['presentity']} {_subscriptionLine(s, now)}\n")
            out.write(f"{len(rows)} subscriptions\n")
        elif command == "refresh-watchers":
            result = await client.call(
                "refreshWatchers", sub["uri"], sub["event"], sub["type"]
            )
            out.write(
                f"refreshed {result['presentity']} {result['event']}"
                f" (type {result['type']}): {result['subscriptions']} subscriptions\n"
            )
        else:
            values = await client.call("get_statistics", *sub["names"])
            for name in sorted(values):
                out.write(f"{name} = {values[name]}\n")
    except CtlError as e:
        err.write(f"presence-ctl: {e}\n")
        return 1
    return 0


async def run(
    options: Options, reactor: Any, out: TextIO, err: TextIO | None = None
) -> int:
    """Carry out the command; return the exit status."""
    err = err if err is not None else sys.stderr
    if options.subCommand in SERVER_COMMANDS:
        return await runServerCommand(options, reactor, out, err)
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
        err.write(f"presence-ctl: {e}{hint}\n")
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
