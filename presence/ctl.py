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

import base64
import getpass
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

from presence.auth.digest import computeHA1
from presence.config import (
    ConfigError,
    adminURL,
    databaseKind,
    fromMapping,
    loadFile,
    sqlitePath,
)
from presence.status import STATUS_NAMES
from presence.storage.credentials import (
    SUBSCRIBER,
    Credentials,
    SQLCredentialStore,
    credentialsRow,
)
from presence.storage.errors import StorageError
from presence.storage.limits import oversized
from presence.storage.statements import SCHEMA_VERSION

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


# -- presence-ctl user ---------------------------------------------------------


class UserAddOptions(usage.Options):
    """Options of ``presence-ctl user add``."""

    synopsis = "presence-ctl user add [--password-stdin] [--store-password] USER@DOMAIN"
    optFlags: ClassVar[list[list[Any]]] = [
        ["password-stdin", None, "Read the password from the first line of stdin."],
        [
            "store-password",
            None,
            "Keep the clear password too (OpenSIPS's password column); by"
            " default only its hashes are stored.",
        ],
    ]

    def parseArgs(self, address: str) -> None:  # type: ignore[override]  # usage.Options counts these arguments
        """Take the user's address."""
        self["username"], self["domain"] = parseUserAddress(address)


class UserRemoveOptions(usage.Options):
    """Options of ``presence-ctl user remove``."""

    synopsis = "presence-ctl user remove USER@DOMAIN"

    def parseArgs(self, address: str) -> None:  # type: ignore[override]  # usage.Options counts these arguments
        """Take the user's address."""
        self["username"], self["domain"] = parseUserAddress(address)


class UserListOptions(usage.Options):
    """Options of ``presence-ctl user list``."""

    synopsis = "presence-ctl user list [DOMAIN]"

    def parseArgs(self, domain: str | None = None) -> None:
        """Take the domain, if any."""
        self["domain"] = domain.lower() if domain else None


class UserOptions(usage.Options):
    """Options of ``presence-ctl user``: the subscriber table of digest authentication.

    Attributes:
        stdin: where ``--password-stdin`` reads the password (``sys.stdin``).
    """

    synopsis = "presence-ctl user add|remove|list"
    longdesc = (
        "Provision the users digest authentication checks (OpenSIPS's subscriber"
        " table). add stores ha1 = MD5(user:realm:password), ha1_sha256 and"
        " ha1_sha512t256 the same with SHA-256 and SHA-512/256, the realm being"
        " auth_realm or the domain; the clear password only with"
        " --store-password. The password is asked for twice, or read from"
        " stdin with --password-stdin."
    )
    subCommands: ClassVar[list[list[Any]]] = [
        ["add", None, UserAddOptions, "Add a user, or change its password."],
        ["remove", None, UserRemoveOptions, "Remove a user."],
        ["list", None, UserListOptions, "List the users (of one domain)."],
    ]

    def __init__(self) -> None:
        """Read passwords from the process's stdin."""
        super().__init__()
        self.stdin: TextIO = sys.stdin

    def postOptions(self) -> None:
        """Insist on an action."""
        if self.subCommand is None:
            raise usage.UsageError("user needs an action: add, remove or list")


def parseUserAddress(address: str) -> tuple[str, str]:
    """``user@domain`` (or ``sip:user@domain``) as the user and its domain.

    Raises:
        usage.UsageError: not of that form.
    """
    text = address[4:] if address.lower().startswith("sip:") else address
    username, at, domain = text.rpartition("@")
    if not at or not username or not domain:
        raise usage.UsageError(f"{address!r}: expected USER@DOMAIN")
    return username, domain.lower()


def userCredentials(
    username: str, domain: str, realm: str, password: str, storePassword: bool
) -> Credentials:
    """A subscriber row as OpenSIPS writes it: every hash, the password if asked.

    Args:
        username: the user.
        domain: its domain.
        realm: the realm the server challenges it in (``auth_realm`` or the
            domain).
        password: the clear password.
        storePassword: whether to keep the clear password too.
    """
    return Credentials(
        username=username,
        domain=domain,
        password=password if storePassword else "",
        ha1=computeHA1("MD5", username, realm, password),
        ha1Sha256=computeHA1("SHA-256", username, realm, password),
        ha1Sha512t256=computeHA1("SHA-512-256", username, realm, password),
    )


def readPassword(options: UserAddOptions, stdin: TextIO) -> str:
    """The new password: stdin's first line, or typed twice at the terminal.

    Raises:
        usage.UsageError: empty, or typed differently twice.
    """
    if options["password-stdin"]:
        password = stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise usage.UsageError("the passwords differ")
    if not password:
        raise usage.UsageError("the password is empty")
    return password


async def runUser(
    options: Options, reactor: Any, out: TextIO, stdin: TextIO | None = None
) -> int:
    """Carry out ``presence-ctl user``; return the exit status."""
    userOptions = options.subOptions
    action, sub = userOptions.subCommand, userOptions.subOptions
    credentials = None
    if action == "add":
        realm = options["authRealm"] or sub["domain"]
        try:
            password = readPassword(sub, stdin or userOptions.stdin)
        except usage.UsageError as e:
            sys.stderr.write(f"presence-ctl: {e}\n")
            return 2
        credentials = userCredentials(
            sub["username"], sub["domain"], realm, password, sub["store-password"]
        )
        problem = oversized(SUBSCRIBER.name, credentialsRow(credentials))
        if problem is not None:
            sys.stderr.write(f"presence-ctl: {problem}\n")
            return 2
    database = openDatabase(options["url"], reactor)
    try:
        await database.start()
        await database.ensureSchema(False)
        users = SQLCredentialStore(database)
        if credentials is not None:
            known = await users.credentials(credentials.username, credentials.domain)
            await users.put(credentials)
            out.write(
                f"{credentials.username}@{credentials.domain}"
                f" {'changed' if known else 'added'} (realm {realm})\n"
            )
        elif action == "remove":
            if not await users.remove(sub["username"], sub["domain"]):
                sys.stderr.write(
                    f"presence-ctl: no user {sub['username']}@{sub['domain']}\n"
                )
                return 1
            out.write(f"{sub['username']}@{sub['domain']} removed\n")
        else:
            for user in await users.all(sub["domain"]):
                out.write(f"{user.username}@{user.domain} {_userColumns(user)}\n")
    except StorageError as e:
        sys.stderr.write(f"presence-ctl: {e}\n")
        return 1
    finally:
        await database.stop()
    return 0


def _userColumns(user: Credentials) -> str:
    """What a user's row can answer, never the hashes or the password."""
    hashes = [
        name
        for name, value in (
            ("MD5", user.ha1),
            ("SHA-256", user.ha1Sha256),
            ("SHA-512-256", user.ha1Sha512t256),
        )
        if value
    ]
    text = f"hashes: {' '.join(hashes) or 'none'}"
    return text + ", clear password stored" if user.password else text


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
            " (0 decides the watchers again under privacy rules; otherwise"
            " both re-send the stored state).",
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
        ["user", None, UserOptions, "Add, remove or list digest users."],
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
            self["adminCredentials"] = (
                None
                if config.adminPassword is None
                else (config.adminUser, config.adminPassword)
            )
            return
        if databaseKind(config.database) == "memory":
            raise usage.UsageError("the database is memory: there is nothing to manage")
        self["url"] = config.database
        self["authRealm"] = config.authRealm


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

    def __init__(
        self,
        url: str,
        reactor: Any,
        timeout: float = CALL_TIMEOUT,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        """Call the server at ``url``, on ``reactor``.

        With ``credentials`` (the configuration's ``admin_user`` and
        ``admin_password``), every call carries them (HTTP basic).
        """
        self.url = url
        self.reactor = reactor
        self.timeout = timeout
        self.credentials = credentials
        self.http = HTTPClient(Agent(reactor, connectTimeout=timeout))

    async def call(self, method: str, *args: Any) -> Any:
        """Call ``method``; return its result.

        Raises:
            CtlError: the server cannot be reached, or answered a fault or
                something that is not XML-RPC.
        """
        body = xmlrpc.client.dumps(args, method, allow_none=False).encode()
        try:
            headers = {b"Content-Type": [b"text/xml"]}
            if self.credentials is not None:
                token = base64.b64encode(":".join(self.credentials).encode("utf-8"))
                headers[b"Authorization"] = [b"Basic " + token]
            posted = self.http.post(self.url, data=body, headers=Headers(headers))
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
        if response.code == 401:
            raise CtlError(
                f"the presence server at {self.url} refused the admin_user and"
                " admin_password of the configuration (HTTP 401)"
            )
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
    client = AdminClient(
        options["url"], reactor, credentials=options.get("adminCredentials")
    )
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
    if options.subCommand == "user":
        return await runUser(options, reactor, out)
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
            found = await database.ensureSchema(False, upgrade=True)
            if found is not None and found < SCHEMA_VERSION:
                out.write(f"schema upgraded from version {found} to {SCHEMA_VERSION}\n")
            else:
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
