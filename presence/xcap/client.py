"""The external XCAP mode: an XCAP client (RFC 4825) on treq.

With ``xcap_server = ["http://host:port/xcap-root"]`` the privacy rules are
fetched from an XCAP server instead of being written into the ``xcap`` table
by it. `XCAPClient` fetches a user's documents and stores them in the table
as OpenSIPS's xcap_client does (``source`` 1, ``doc_uri`` the full URL
fetched, ``port`` the XCAP server's port, the entity tag without its
quotes), so that the pres-rules policy
(`presence.xcap.integrated.RulesPolicy`) reads them as in the integrated
mode; `FetchingXCAPStore` is the store that policy is given, which asks the
client for a user's documents the first time the user's rules are read.

- The first SUBSCRIBE to a user is decided by what the table holds then
  (nothing: pending); the fetch runs meanwhile, and when it stores a
  document the user's watchers are re-authorised (``onChanged``). A
  SUBSCRIBE never waits on an HTTP server.
- The documents fetched: ``<root>/pres-rules/users/sip:<user>@<domain>/index``,
  and ``<root>/resource-lists/users/sip:<user>@<domain>/index`` when the
  pres-rules have an ``external-list`` condition (or a resource-lists
  document is already held), and with ``hardState`` (``pidf_manipulation``)
  ``<root>/pidf-manipulation/users/sip:<user>@<domain>/index`` (RFC 4827).
- Every ``period`` seconds each user asked for is fetched again, with
  ``If-None-Match`` on the held entity tag: 304 changes nothing, 200 with
  another document replaces it and re-authorises, 404 removes it and
  re-authorises.
- Several roots (``xcap_server = [A, B]``) are replicas of one XCAP
  service: a fetch goes to the root that answered last (the first one to
  begin with), and when that root is unreachable, times out or answers 5xx
  the next one is tried, each at most once per fetch. Any other answer
  (200, 304, 404, another error) is the service's answer and ends the
  fetch. A document is stored under the URL of the root that answered it.
- Fail closed: an error (every root unreachable, timing out or answering
  5xx; a status other than 200, 304 and 404; a body over ``maxSize``, a
  body that is not well-formed XML) keeps what is held, is logged once per
  server until it answers again, and is retried at the next period. A
  watcher is never made active because an XCAP server could not be reached.
- One fetch of a URL at a time: a second caller waits for the first's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Final
from urllib.parse import quote, urlsplit

from lxml import etree
from treq import collect as collectBody
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from presence.packages.xml import MAX_XML_SIZE, parseXML
from presence.sip.errors import BadRequest
from presence.storage.xcap import (
    PIDF_MANIPULATION,
    PRES_RULES,
    RESOURCE_LISTS,
    IXCAPStore,
    XCAPDocument,
)

#: Seconds a fetch may take, answer and body included.
FETCH_TIMEOUT: Final = 10.0

#: The largest document accepted, in bytes; a larger one is an error. The
#: hardened parser's limit, which the rules policy would refuse beyond anyway.
MAX_DOCUMENT_SIZE: Final = MAX_XML_SIZE

#: How many users' documents are kept fresh at most.
USER_LIMIT: Final = 10_000

#: The application usage of each document type fetched (RFC 5025, RFC 4826,
#: RFC 4827).
AUIDS: Final = {
    PRES_RULES: "pres-rules",
    RESOURCE_LISTS: "resource-lists",
    PIDF_MANIPULATION: "pidf-manipulation",
}

_EXTERNAL_LIST: Final = "{urn:oma:xml:xdm:common-policy}external-list"

#: Told a presentity (``sip:user@domain``) whose documents changed.
Changed = Callable[[str], Awaitable[object]]


class XCAPError(Exception):
    """A fetch that did not give a usable answer."""


class _TooLarge(XCAPError):
    pass


class _ServerFailed(XCAPError):
    """A 5xx: the next root is tried."""


def _refuse(data: bytes) -> None:
    raise XCAPError("a body not read")


def unquoteETag(value: str) -> str:
    """An entity tag without its quotes (and without ``W/``)."""
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return value


def serverPort(url: str) -> int:
    """The port of a URL, its scheme's default when not given."""
    parts = urlsplit(url)
    if parts.port is not None:
        return parts.port
    return 443 if parts.scheme == "https" else 80


@implementer(IXCAPStore)
class FetchingXCAPStore:
    """An `IXCAPStore` that asks the client for a user read the first time.

    Reads answer at once from the table below; the fetch they start stores
    into it later, and the client re-authorises then.
    """

    def __init__(self, documents: IXCAPStore, client: XCAPClient) -> None:
        """Read ``documents``, asking ``client`` for users not seen yet."""
        self.store = documents
        self.client = client

    async def documents(
        self, username: str, domain: str, docTypes: Iterable[int]
    ) -> list[XCAPDocument]:
        """See `IXCAPStore.documents`."""
        self.client.wanted(username, domain)
        return await self.store.documents(username, domain, docTypes)

    async def put(self, document: XCAPDocument) -> None:
        """See `IXCAPStore.put`."""
        await self.store.put(document)

    async def remove(
        self, username: str, domain: str, docType: int, docURI: str
    ) -> bool:
        """See `IXCAPStore.remove`."""
        return await self.store.remove(username, domain, docType, docURI)


class XCAPClient(Service):
    """Fetches users' documents from an XCAP server into the ``xcap`` table.

    A service: while running, every user asked for is fetched again each
    ``period`` seconds (when ``periodical``).

    Attributes:
        fetches: HTTP requests sent.
        failures: fetches of a document that failed on every root tried (the
            held document kept).
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        http: Any,
        documents: IXCAPStore,
        roots: Sequence[str],
        onChanged: Changed | None = None,
        periodical: bool = True,
        period: float = 100.0,
        timeout: float = FETCH_TIMEOUT,
        maxSize: int = MAX_DOCUMENT_SIZE,
        limit: int = USER_LIMIT,
        hardState: bool = False,
    ) -> None:
        """Fetch from ``roots`` through ``http``, the next when one fails.

        Args:
            clock: the clock of timeouts and of the periodic check.
            http: a ``treq.client.HTTPClient`` (or ``treq.testing.StubTreq``).
            documents: the ``xcap`` table the documents are stored in.
            roots: the XCAP roots (``http://host:port/xcap-root``), replicas
                of one service: the first is used, and the next when the
                one in use is unreachable or answers 5xx.
            onChanged: told the presentity whose documents changed (the
                re-authorisation of its watchers).
            periodical: whether to fetch again every ``period`` seconds.
            period: seconds between the periodic checks.
            timeout: seconds a fetch may take.
            maxSize: the largest document accepted.
            limit: how many users are kept fresh.
            hardState: whether each user's pidf-manipulation document
                (``<root>/pidf-manipulation/users/sip:<aor>/index``, RFC
                4827) is fetched too, with the pres-rules.
        """
        self.clock = clock
        self.http = http
        self.documents = documents
        self.roots = tuple(root.rstrip("/") for root in roots)
        self.onChanged = onChanged
        self.periodical = periodical
        self.period = period
        self.timeout = timeout
        self.maxSize = maxSize
        self.limit = limit
        self.hardState = hardState
        self.fetches = 0
        self.failures = 0
        self._users: dict[tuple[str, str], None] = {}
        self._inflight: dict[str, list[Deferred[bool]]] = {}
        self._outages: set[str] = set()
        #: The index in `roots` of the root that answered last.
        self._current = 0
        self._loop: LoopingCall | None = None

    # -- the service -------------------------------------------------------

    def startService(self) -> None:
        """Start the periodic check."""
        super().startService()
        if self.periodical:
            self._loop = LoopingCall(self._poll)
            self._loop.clock = self.clock
            self._loop.start(self.period, now=False).addErrback(self._logged)

    def stopService(self) -> None:
        """Stop the periodic check."""
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _poll(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self.poll())

    async def poll(self) -> None:
        """Fetch every user's documents again, one user after the other."""
        for username, domain in list(self._users):
            try:
                await self.fetchUser(username, domain)
            except Exception:
                self.log.failure(
                    "checking the documents of {user}@{domain}",
                    user=username,
                    domain=domain,
                )

    def _logged(self, failure: Failure) -> None:
        self.log.failure("the XCAP client", failure)

    # -- fetching ----------------------------------------------------------

    def url(
        self, docType: int, username: str, domain: str, root: str | None = None
    ) -> str:
        """The URL of a user's document (RFC 4825 section 6, the XUI).

        Under ``root``, by default the first of `roots`.
        """
        xui = quote(f"sip:{username}@{domain}", safe=":@")
        return f"{root or self.roots[0]}/{AUIDS[docType]}/users/{xui}/index"

    def _urls(self, docType: int, username: str, domain: str) -> list[str]:
        """The document's URL under every root, in the order they are tried."""
        count = len(self.roots)
        return [
            self.url(docType, username, domain, self.roots[(self._current + i) % count])
            for i in range(count)
        ]

    def wanted(self, username: str, domain: str) -> None:
        """A user's rules are read: fetch them the first time."""
        key = (username, domain.lower())
        if key in self._users:
            return
        while len(self._users) >= self.limit:
            del self._users[next(iter(self._users))]
        self._users[key] = None
        Deferred.fromCoroutine(self.fetchUser(*key)).addErrback(self._logged)

    async def fetchUser(self, username: str, domain: str) -> bool:
        """Fetch a user's documents; re-authorise when one changed.

        Returns:
            Whether a document changed.
        """
        domain = domain.lower()
        changed = await self.fetch(username, domain, PRES_RULES)
        if await self._wantsLists(username, domain):
            changed = await self.fetch(username, domain, RESOURCE_LISTS) or changed
        if self.hardState:
            changed = await self.fetch(username, domain, PIDF_MANIPULATION) or changed
        if changed and self.onChanged is not None:
            await self.onChanged(f"sip:{username}@{domain}")
        return changed

    async def _wantsLists(self, username: str, domain: str) -> bool:
        rows = await self.documents.documents(
            username, domain, (PRES_RULES, RESOURCE_LISTS)
        )
        for row in rows:
            if row.docType == RESOURCE_LISTS:
                return True
            try:
                root = parseXML(row.doc, "pres-rules")
            except BadRequest:
                continue
            if next(root.iter(_EXTERNAL_LIST), None) is not None:
                return True
        return False

    async def fetch(self, username: str, domain: str, docType: int) -> bool:
        """Fetch one document of a user, or wait for the fetch in flight.

        Returns:
            Whether what the table holds changed.
        """
        url = self.url(docType, username, domain)
        waiting = self._inflight.get(url)
        if waiting is not None:
            waiter: Deferred[bool] = Deferred()
            waiting.append(waiter)
            return await waiter
        waiters: list[Deferred[bool]] = []
        self._inflight[url] = waiters
        try:
            changed = await self._fetch(username, domain, docType)
        except BaseException:
            failure = Failure()
            del self._inflight[url]
            for waiter in waiters:
                waiter.errback(failure)
            raise
        del self._inflight[url]
        for waiter in waiters:
            waiter.callback(changed)
        return changed

    async def _fetch(self, username: str, domain: str, docType: int) -> bool:
        urls = self._urls(docType, username, domain)
        held = next(
            (
                row
                for row in await self.documents.documents(username, domain, (docType,))
                if row.docURI in urls
            ),
            None,
        )
        headers: dict[bytes, list[bytes]] = {}
        if held is not None and held.etag:
            headers[b"If-None-Match"] = [f'"{held.etag}"'.encode()]
        first = self._current
        for tried, url in enumerate(urls):
            server = urlsplit(url).netloc
            last = tried == len(urls) - 1
            self.fetches += 1
            try:
                code, etag, body = await self._get(url, headers)
            except Exception as e:
                final = last or (
                    isinstance(e, XCAPError) and not isinstance(e, _ServerFailed)
                )
                self._failed(server, e, None if final else urls[tried + 1])
                if final:
                    self.failures += 1
                    return False
                continue
            self._current = (first + tried) % len(urls)
            break
        if server in self._outages:
            self._outages.discard(server)
            self.log.info("XCAP server {server} answers again", server=server)
        if code == 304:
            return False
        if code == 404:
            if held is None:
                return False
            await self.documents.remove(username, domain, docType, held.docURI)
            return True
        assert body is not None
        same = held is not None and held.doc == body and held.etag == etag
        if same and held is not None and held.docURI == url:
            return False
        await self._store(username, domain, docType, url, body, etag)
        if held is not None and held.docURI != url:
            # From another root than the last time: kept under its URL.
            await self.documents.remove(username, domain, docType, held.docURI)
        return not same

    def _failed(self, server: str, error: Exception, following: str | None) -> None:
        """Log a server's failure, once until it answers again."""
        if server in self._outages:
            return
        self._outages.add(server)
        if following is None:
            self.log.warn(
                "XCAP server {server} failed ({error}): the documents held"
                " are kept, and fetched again at the next check",
                server=server,
                error=str(error) or type(error).__name__,
            )
        else:
            self.log.warn(
                "XCAP server {server} failed ({error}): trying {following}",
                server=server,
                error=str(error) or type(error).__name__,
                following=following,
            )

    async def _store(
        self,
        username: str,
        domain: str,
        docType: int,
        url: str,
        body: bytes,
        etag: str,
    ) -> None:
        await self.documents.put(
            XCAPDocument(
                username=username,
                domain=domain,
                doc=body,
                docType=docType,
                etag=etag,
                docURI=url,
                source=1,
                port=serverPort(url),
            )
        )

    async def _get(
        self, url: str, headers: dict[bytes, list[bytes]]
    ) -> tuple[int, str, bytes | None]:
        """GET a document: its status, entity tag and body (200 only).

        Raises:
            XCAPError: any answer but 200, 304 and 404, or a bad body.
        """
        started = self.clock.seconds()
        # No redirects: a 3xx is an answer like any other error.
        request = self.http.get(url, headers=headers, allow_redirects=False)
        request.addTimeout(self.timeout, self.clock)
        response = await request
        code = int(response.code)
        if code != 200:
            # The body is not wanted: its first bytes close the connection.
            collectBody(response, _refuse).addErrback(lambda _: None)
        if code in (304, 404):
            return code, "", None
        if code >= 500:
            raise _ServerFailed(f"{url} answered {code}")
        if code != 200:
            raise XCAPError(f"{url} answered {code}")
        length = response.length
        if isinstance(length, int) and length > self.maxSize:
            raise _TooLarge(f"{url} is larger than {self.maxSize} bytes")
        received: list[bytes] = []
        size = 0

        def collect(data: bytes) -> None:
            nonlocal size
            size += len(data)
            if size > self.maxSize:
                raise _TooLarge(f"{url} is larger than {self.maxSize} bytes")
            received.append(data)

        reading: Deferred[None] = collectBody(response, collect)
        left = self.timeout - (self.clock.seconds() - started)
        reading.addTimeout(max(left, 0.0), self.clock)
        await reading
        body = b"".join(received)
        try:
            parseXML(body, "XCAP document")
        except BadRequest as e:
            raise XCAPError(f"{url}: {e.reason}") from None
        except (etree.LxmlError, ValueError) as e:
            raise XCAPError(f"{url}: {e}") from None
        etags = response.headers.getRawHeaders(b"etag") or [b""]
        return code, unquoteETag(etags[0].decode("latin-1")), body

    # -- refreshXcapDoc ----------------------------------------------------

    def parseURL(self, docURI: str) -> tuple[str, str, int]:
        """The user, domain and type of a document URL of this client's.

        Raises:
            LookupError: not the URL of a document this client fetches.
        """
        for root in self.roots:
            if not docURI.startswith(root + "/"):
                continue
            parts = docURI[len(root) + 1 :].split("/")
            if len(parts) != 4 or parts[1] != "users" or parts[3] != "index":
                continue
            types = {auid: docType for docType, auid in AUIDS.items()}
            docType = types.get(parts[0])
            user, at, domain = parts[2].removeprefix("sip:").rpartition("@")
            if docType is None or not at or not user:
                continue
            if self.url(docType, user, domain, root) != docURI:
                continue
            return user, domain.lower(), docType
        raise LookupError(f"{docURI} is not a document of {', '.join(self.roots)}")

    async def refresh(self, docURI: str, port: int | None = None) -> bool:
        """Fetch one held document again at once, then re-authorise.

        Args:
            docURI: the document's ``doc_uri`` as stored (the full URL), or
                its URL under another of the roots.
            port: its ``port`` as stored; checked only when given.

        Returns:
            Whether the document changed.

        Raises:
            LookupError: no such document is held.
        """
        username, domain, docType = self.parseURL(docURI)
        rows = await self.documents.documents(username, domain, (docType,))
        urls = self._urls(docType, username, domain)
        held = next((row for row in rows if row.docURI in urls), None)
        if held is None:
            raise LookupError(f"no document {docURI} is held")
        if port is not None and held.port != port:
            raise LookupError(f"{docURI} is held with port {held.port}, not {port}")
        self._users.setdefault((username, domain), None)
        changed = await self.fetch(username, domain, docType)
        if self.onChanged is not None:
            await self.onChanged(f"sip:{username}@{domain}")
        return changed
