"""The pres-rules policy: decisions from the rules an XCAP server stored.

`RulesPolicy` provides `IPrivacyPolicy <presence.xcap.policy.IPrivacyPolicy>`
over an `IXCAPStore <presence.storage.xcap.IXCAPStore>`: the integrated XCAP
mode, in which OpenXCAP (or Kamailio's xcap_server) writes each user's
documents into the ``xcap`` table. For a watcher of ``sip:user@domain``:

- every pres-rules document of the user (``doc_type`` 2, and 32 for OMA
  pres-rules, each row whatever its ``doc_uri``) is one rule set
  (`presence.xcap.rules.parseRuleSet`), evaluated with the members of the
  user's resource lists (``doc_type`` 4) for ``external-list`` conditions;
- no pres-rules document at all: pending (`presence.xcap.rules.NO_RULES`),
  as OpenSIPS and Kamailio do without ``force_active``;
- a document that cannot be read: every watcher blocked
  (`presence.xcap.rules.BLOCK_ALL`), logged once per version of the
  documents;
- the outcome gives the status and reason, the permissions and whether the
  block is polite.

`HardStateReader` provides `IHardState <presence.xcap.policy.IHardState>`
over the same store: each user's pidf-manipulation documents (``doc_type``
16, RFC 4827, whatever their ``doc_uri``), the hard state the presence
package aggregates with what was published.

The table is written by another process, so it is read again when what was
read is older than `RULES_TTL` seconds; the parsed rule set is kept as long
as the entity tags of the rows are the same, and `RulesPolicy.forget` drops
a user's at once (the re-authorise operation calls it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from presence.storage.errors import StorageError
from presence.storage.xcap import (
    PIDF_MANIPULATION,
    RESOURCE_LISTS,
    RULES_TYPES,
    IXCAPStore,
    XCAPDocument,
)
from presence.xcap.lists import resourceLists
from presence.xcap.policy import Decision, HardState, IHardState, IPrivacyPolicy
from presence.xcap.rules import (
    BLOCK_ALL,
    RulesError,
    RuleSet,
    Watcher,
    evaluate,
    parseRuleSet,
)

#: Seconds a user's rows, once read, are used without reading them again.
#: Short: the table is written by the XCAP server, which may never say so.
RULES_TTL: Final = 2.0

#: How many users' rules are kept at most.
RULES_CACHE_LIMIT: Final = 10_000

#: Reads the presentity's current sphere (``sip:user@domain`` in).
SphereReader = Callable[[str], Awaitable[str | None]]


@dataclass
class _Rules:
    """One user's rules as last read."""

    readAt: float
    tags: tuple[tuple[int, str, str], ...]
    ruleSet: RuleSet | None
    lists: dict[str, frozenset[str]]

    @property
    def hasSphereConditions(self) -> bool:
        return self.ruleSet is not None and any(r.spheres for r in self.ruleSet.rules)


def _userOf(presentity: str) -> tuple[str, str]:
    """``sip:alice@example.com`` -> ``("alice", "example.com")``."""
    aor = presentity.partition(":")[2] if ":" in presentity else presentity
    user, _, domain = aor.rpartition("@")
    return user, domain.lower()


@implementer(IPrivacyPolicy)
class RulesPolicy:
    """Watchers decided by the user's pres-rules (integrated XCAP mode).

    Attributes:
        parsed: how many times documents were parsed (a change of tags).
        reads: how many times the store was read.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        documents: IXCAPStore,
        sphere: SphereReader | None = None,
        ttl: float = RULES_TTL,
        limit: int = RULES_CACHE_LIMIT,
    ) -> None:
        """Read rules from ``documents``.

        Args:
            clock: the clock for ``validity`` conditions and the cache.
            documents: where the users' documents are.
            sphere: reads a presentity's current sphere, asked only when a
                rule has a ``sphere`` condition; none: no sphere condition
                ever holds.
            ttl: seconds rows once read are used before reading them again.
            limit: how many users' rules are kept.
        """
        self.clock = clock
        self.documents = documents
        self.sphere = sphere
        self.ttl = ttl
        self.limit = limit
        self._rules: dict[tuple[str, str], _Rules] = {}
        self._decisions: dict[tuple[int, str | None, object, bool], Decision] = {}
        self.parsed = 0
        self.reads = 0

    async def rules(self, presentity: str) -> _Rules:
        """The presentity's rules, read again when older than `ttl`."""
        key = _userOf(presentity)
        now = self.clock.seconds()
        kept = self._rules.get(key)
        if kept is not None and kept.readAt + self.ttl > now:
            return kept
        self.reads += 1
        rows = await self.documents.documents(
            key[0], key[1], (*RULES_TYPES, RESOURCE_LISTS)
        )
        tags = tuple((r.docType, r.docURI, r.etag) for r in rows)
        if kept is not None and kept.tags == tags:
            kept.readAt = now
            return kept
        rules = self._parse(presentity, rows, tags, now)
        cache = self._rules
        cache.pop(key, None)
        while len(cache) >= self.limit:
            del cache[next(iter(cache))]
        cache[key] = rules
        return rules

    def _parse(
        self,
        presentity: str,
        rows: Sequence[XCAPDocument],
        tags: tuple[tuple[int, str, str], ...],
        now: float,
    ) -> _Rules:
        self.parsed += 1
        policies = [r.doc for r in rows if r.docType in RULES_TYPES]
        ruleSet: RuleSet | None = None
        if policies:
            try:
                ruleSet = parseRuleSet(policies)
            except RulesError as e:
                # Logged once: the next parse comes only with new tags.
                self.log.warn(
                    "the pres-rules of {presentity} cannot be read ({error}):"
                    " every watcher is blocked until they are fixed",
                    presentity=presentity,
                    error=str(e),
                )
                ruleSet = BLOCK_ALL
        lists: dict[str, frozenset[str]] = {}
        for row in rows:
            if row.docType != RESOURCE_LISTS:
                continue
            try:
                found = resourceLists(row.doc)
            except RulesError as e:
                self.log.warn(
                    "the resource lists of {presentity} cannot be read"
                    " ({error}): nobody is a member of them",
                    presentity=presentity,
                    error=str(e),
                )
                continue
            for name, members in found.items():
                lists[name] = lists.get(name, frozenset()) | members
        return _Rules(now, tags, ruleSet, lists)

    async def hasSphereConditions(self, presentity: str) -> bool:
        """Whether a rule of the presentity's depends on its sphere."""
        return (await self.rules(presentity)).hasSphereConditions

    async def authorise(
        self, presentity: str, watcherUsername: str, watcherDomain: str, event: str
    ) -> Decision:
        """The decision of the presentity's rules for one watcher.

        See `IPrivacyPolicy.authorise
        <presence.xcap.policy.IPrivacyPolicy.authorise>`.
        """
        rules = await self.rules(presentity)
        sphere = None
        if self.sphere is not None and rules.hasSphereConditions:
            sphere = await self.sphere(presentity)
        outcome = evaluate(
            rules.ruleSet,
            Watcher.fromParts(watcherUsername, watcherDomain),
            self.clock.seconds(),
            sphere,
            rules.lists,
        )
        key = (outcome.status, outcome.reason, outcome.permissions, outcome.politeBlock)
        decision = self._decisions.get(key)
        if decision is None:
            # One Decision object per distinct outcome, shared by watchers.
            if len(self._decisions) >= self.limit:
                self._decisions.clear()
            decision = self._decisions[key] = Decision(*key)
        return decision

    def forget(self, presentity: str) -> None:
        """Read the presentity's documents again next time."""
        self._rules.pop(_userOf(presentity), None)

    async def changedUsers(self) -> list[str]:
        """The users whose documents changed since their rules were read.

        Each user whose rules are held is read again (one query each); a
        row changed, added or deleted makes the user's rules be read again
        next time, and the user is returned, ``sip:user@domain``.
        """
        changed: list[str] = []
        for key, kept in list(self._rules.items()):
            rows = await self.documents.documents(
                key[0], key[1], (*RULES_TYPES, RESOURCE_LISTS)
            )
            self.reads += 1
            if tuple((r.docType, r.docURI, r.etag) for r in rows) != kept.tags:
                self._rules.pop(key, None)
                changed.append(f"sip:{key[0]}@{key[1]}")
        return changed


class RulesWatch(Service):
    """Notices by itself a rules document written or deleted in the table.

    OpenXCAP 2.x signals a PUT (``refreshWatchers``) but never a DELETE, and
    an XCAP server may signal nothing at all: every ``period`` seconds the
    documents of every user whose rules are held are read again, and the
    users whose documents changed are re-authorised (their watchers decided
    again, the changes notified), so that what the rules no longer allow is
    revoked within one period.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        policy: RulesPolicy,
        onChanged: Callable[[str], Awaitable[object]],
        period: float,
        hardState: HardStateReader | None = None,
    ) -> None:
        """Check ``policy``'s users every ``period`` seconds on ``clock``.

        With ``hardState``, the users whose hard state is held are checked
        too: a pidf-manipulation row written, changed or deleted
        re-authorises the user like a rules row does (and the re-authorise
        operation notifies every watcher of the new state).
        """
        self.clock = clock
        self.policy = policy
        self.hardState = hardState
        self.onChanged = onChanged
        self.period = period
        self.checks = 0
        self._loop: LoopingCall | None = None

    def startService(self) -> None:
        """Start checking."""
        super().startService()  # type: ignore[no-untyped-call]
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self.clock
        self._loop.start(self.period, now=False).addErrback(
            lambda f: self.log.failure("rules check stopped", f)
        )

    def stopService(self) -> Any:
        """Stop checking."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return super().stopService()  # type: ignore[no-untyped-call]

    def _tick(self) -> Deferred[None]:
        async def once() -> None:
            await self.check()

        return Deferred.fromCoroutine(once())

    async def check(self) -> int:
        """Check once; re-authorise the users whose documents changed.

        Returns:
            How many users were re-authorised.
        """
        self.checks += 1
        try:
            users = await self.policy.changedUsers()
            if self.hardState is not None:
                for user in await self.hardState.changedUsers():
                    if user not in users:
                        users.append(user)
        except StorageError as e:
            self.log.warn("rules check skipped: {error}", error=str(e))
            return 0
        for presentity in users:
            await self.onChanged(presentity)
        return len(users)


# -- the hard state (RFC 4827, pidf-manipulation) ------------------------------

#: How many users' hard state is kept at most.
HARD_STATE_LIMIT: Final = 10_000

_NOT_HELD: Final = object()


def hardStateOf(rows: Sequence[XCAPDocument]) -> HardState | None:
    """The hard state in a user's rows: every ``doc_type`` 16 row, any ``doc_uri``.

    The documents come in the order of their ``doc_uri``; the tag is a
    digest of the names, entity tags and contents, so that a document
    rewritten under the same entity tag is a change too.
    """
    found = sorted(
        (row for row in rows if row.docType == PIDF_MANIPULATION),
        key=lambda row: row.docURI,
    )
    if not found:
        return None
    digest = hashlib.sha256()
    for row in found:
        digest.update(row.docURI.encode("utf-8", "replace") + b"\0")
        digest.update(row.etag.encode("utf-8", "replace") + b"\0")
        digest.update(hashlib.sha256(row.doc).digest())
    return HardState(digest.hexdigest()[:32], tuple(row.doc for row in found))


def _tagOf(state: object) -> str | None:
    return state.tag if isinstance(state, HardState) else None


@implementer(IHardState)
class HardStateReader:
    """Users' hard state from the ``xcap`` table (``doc_type`` 16).

    A user's documents are read the first time the presence package
    composes the user's document, and then held: `reload` (the re-authorise
    operation) and the periodic check (`RulesWatch`, through
    `changedUsers`) read them again. In the external mode the store is the
    `FetchingXCAPStore <presence.xcap.client.FetchingXCAPStore>`, whose
    client fetches the documents.

    Attributes:
        reads: how many times the store was read.
    """

    def __init__(self, documents: IXCAPStore, limit: int = HARD_STATE_LIMIT) -> None:
        """Read the hard state from ``documents``, for at most ``limit`` users."""
        self.documents = documents
        self.limit = limit
        self.reads = 0
        self._held: dict[tuple[str, str], HardState | None] = {}
        self._reading: dict[tuple[str, str], list[Deferred[HardState | None]]] = {}

    async def _read(self, key: tuple[str, str]) -> HardState | None:
        self.reads += 1
        rows = await self.documents.documents(key[0], key[1], (PIDF_MANIPULATION,))
        return hardStateOf(rows)

    def _keep(self, key: tuple[str, str], state: HardState | None) -> None:
        held = self._held
        held.pop(key, None)
        while len(held) >= self.limit:
            del held[next(iter(held))]
        held[key] = state

    def current(
        self, presentity: str
    ) -> HardState | Awaitable[HardState | None] | None:
        """See `IHardState.current <presence.xcap.policy.IHardState.current>`."""
        key = _userOf(presentity)
        held = self._held.get(key, _NOT_HELD)
        if held is not _NOT_HELD:
            return cast(HardState | None, held)
        return Deferred.fromCoroutine(self._first(key))

    async def _first(self, key: tuple[str, str]) -> HardState | None:
        # One read of a user at a time: the watchers of a fan-out wait for it.
        waiting = self._reading.get(key)
        if waiting is not None:
            waiter: Deferred[HardState | None] = Deferred()
            waiting.append(waiter)
            return await waiter
        waiters: list[Deferred[HardState | None]] = []
        self._reading[key] = waiters
        try:
            state = await self._read(key)
        except BaseException:
            failure = Failure()
            del self._reading[key]
            for waiter in waiters:
                waiter.errback(failure)
            raise
        del self._reading[key]
        held = self._held.get(key, _NOT_HELD)
        if held is _NOT_HELD:
            self._keep(key, state)
        else:
            # A reload ran meanwhile: what it read is what watchers are told.
            state = cast(HardState | None, held)
        for waiter in waiters:
            waiter.callback(state)
        return state

    async def reload(self, presentity: str) -> bool:
        """See `IHardState.reload <presence.xcap.policy.IHardState.reload>`."""
        key = _userOf(presentity)
        before = self._held.get(key, _NOT_HELD)
        state = await self._read(key)
        self._keep(key, state)
        if before is _NOT_HELD:
            return state is not None
        return _tagOf(before) != _tagOf(state)

    def forget(self, presentity: str) -> None:
        """Hold nothing of the presentity's: read it again next time."""
        self._held.pop(_userOf(presentity), None)

    async def changedUsers(self) -> list[str]:
        """The users whose hard state in the table is not the one held.

        One query per user held; what is held is left as it is (`reload`
        replaces it, and says it changed).
        """
        changed: list[str] = []
        for key, held in list(self._held.items()):
            if _tagOf(await self._read(key)) != _tagOf(held):
                changed.append(f"sip:{key[0]}@{key[1]}")
        return changed
