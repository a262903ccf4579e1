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
from typing import Any, Final

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
        # Rules replaced by a read that found other rows (after the TTL, by
        # whoever asked first) before any re-authorisation: what the
        # watchers were decided with, and a change the periodic check must
        # still see (the read itself tells no watcher).
        self._replaced: dict[tuple[str, str], _Rules] = {}
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
        if kept is not None and key not in self._replaced:
            replaced = self._replaced
            while len(replaced) >= self.limit:
                del replaced[next(iter(replaced))]
            replaced[key] = kept
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
        return await self._decide(
            await self.rules(presentity), presentity, watcherUsername, watcherDomain
        )

    def held(self, presentity: str) -> object | None:
        """The presentity's rules as held now, to decide with later; none held.

        The re-authorise operation takes them before it drops them
        (`forget`), so that it can tell what the rules decided before the
        change for a watcher whose decision was not kept (a row read back
        from the database in shared storage).
        """
        key = _userOf(presentity)
        return self._replaced.get(key) or self._rules.get(key)

    async def authoriseHeld(
        self,
        held: object,
        presentity: str,
        watcherUsername: str,
        watcherDomain: str,
        event: str,
    ) -> Decision:
        """The decision of rules `held` returned, for one watcher, now."""
        assert isinstance(held, _Rules)
        return await self._decide(held, presentity, watcherUsername, watcherDomain)

    async def _decide(
        self,
        rules: _Rules,
        presentity: str,
        watcherUsername: str,
        watcherDomain: str,
    ) -> Decision:
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
        key = _userOf(presentity)
        self._rules.pop(key, None)
        self._replaced.pop(key, None)

    def users(self) -> list[tuple[str, str]]:
        """The users whose rules are held (or were, and changed since)."""
        return [
            *self._rules,
            *(key for key in self._replaced if key not in self._rules),
        ]

    def changed(self, key: tuple[str, str], rows: Sequence[XCAPDocument]) -> bool:
        """Whether the user's rows differ from those the held rules came from.

        ``rows`` may hold other document types (the periodic check reads
        the rules and the hard state in one query). What is held is left
        as it is: the re-authorise operation drops it (`forget`) once it
        runs, so that a re-authorisation that fails finds the change again.
        Rules another read replaced since the last re-authorisation count as
        changed whatever the rows say now: the watchers were decided with
        the older ones.
        """
        if key in self._replaced:
            return True
        kept = self._rules.get(key)
        if kept is None:
            return False
        tags = tuple(
            (r.docType, r.docURI, r.etag)
            for r in rows
            if r.docType in RULES_TYPES or r.docType == RESOURCE_LISTS
        )
        return tags != kept.tags

    async def changedUsers(self) -> list[str]:
        """The users whose documents changed since their rules were read.

        Each user whose rules are held is read again (one query each); the
        users whose rows changed, were added or deleted are returned,
        ``sip:user@domain``; their rules are kept until `forget`.
        """
        changed: list[str] = []
        for key in self.users():
            rows = await self.documents.documents(
                key[0], key[1], (*RULES_TYPES, RESOURCE_LISTS)
            )
            self.reads += 1
            if self.changed(key, rows):
                changed.append(f"sip:{key[0]}@{key[1]}")
        return changed


class RulesWatch(Service):
    """Notices by itself a rules document written or deleted in the table.

    OpenXCAP 2.x signals a PUT (``refreshWatchers``) but never a DELETE, and
    an XCAP server may signal nothing at all: every ``period`` seconds the
    documents of every user whose rules (or hard state) are held are read
    again, one query per user for both, and the users whose documents
    changed are re-authorised (their watchers decided again, the changes
    notified), so that what the rules no longer allow is revoked within one
    period.

    A re-authorisation that fails (the database out of reach) keeps the
    user queued: the next check re-authorises the user again, whatever the
    table then says, until one succeeds. An outage is logged once, when it
    begins, and once more when a check succeeds again; the checks go on.

    Attributes:
        checks: how many checks ran.
        queries: how many times the table was read.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        policy: RulesPolicy | None,
        onChanged: Callable[[str], Awaitable[object]],
        period: float,
        hardState: HardStateReader | None = None,
        documents: IXCAPStore | None = None,
    ) -> None:
        """Check ``policy``'s users every ``period`` seconds on ``clock``.

        Args:
            clock: the clock.
            policy: the rules policy whose users are checked; none: only
                the hard state is (the external mode in shared storage).
            onChanged: re-authorises a user, ``sip:user@domain``.
            period: seconds between checks.
            hardState: the users whose hard state is held are checked too:
                a pidf-manipulation row written, changed or deleted
                re-authorises the user like a rules row does (and the
                re-authorise operation notifies every watcher of the new
                state).
            documents: where the rows are read; none: the policy's store
                (or the hard state's).
        """
        self.clock = clock
        self.policy = policy
        self.hardState = hardState
        self.onChanged = onChanged
        self.period = period
        self.checks = 0
        self.queries = 0
        if documents is None:
            if policy is not None:
                documents = policy.documents
            elif hardState is not None:
                documents = hardState.documents
            else:
                raise ValueError("RulesWatch needs a policy or a hard state")
        self.documents = documents
        # Users whose re-authorisation failed: tried again at the next check.
        self._retry: dict[str, None] = {}
        self._outage = False
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
            try:
                await self.check()
            except Exception:
                # Never stop the loop: the next period checks again.
                self.log.failure("rules check failed")

        return Deferred.fromCoroutine(once())

    def _types(self) -> tuple[int, ...]:
        types: tuple[int, ...] = ()
        if self.policy is not None:
            types = (*RULES_TYPES, RESOURCE_LISTS)
        if self.hardState is not None:
            types = (*types, PIDF_MANIPULATION)
        return types

    async def changedUsers(self) -> list[str]:
        """The users whose rows changed: one query per user held.

        Raises:
            StorageError: the table cannot be read.
        """
        keys: dict[tuple[str, str], None] = {}
        if self.policy is not None:
            keys.update(dict.fromkeys(self.policy.users()))
        if self.hardState is not None:
            keys.update(dict.fromkeys(self.hardState.users()))
        types = self._types()
        changed: list[str] = []
        for key in keys:
            self.queries += 1
            rows = await self.documents.documents(key[0], key[1], types)
            if (self.policy is not None and self.policy.changed(key, rows)) or (
                self.hardState is not None and self.hardState.changed(key, rows)
            ):
                changed.append(f"sip:{key[0]}@{key[1]}")
        return changed

    async def check(self) -> int:
        """Check once; re-authorise the users whose documents changed.

        Returns:
            How many users were re-authorised.
        """
        self.checks += 1
        users = dict.fromkeys(self._retry)
        failed: dict[str, None] = {}
        error: StorageError | None = None
        try:
            users.update(dict.fromkeys(await self.changedUsers()))
        except StorageError as e:
            error = e
        done = 0
        for presentity in users:
            try:
                await self.onChanged(presentity)
            except StorageError as e:
                failed[presentity] = None
                error = e
            except Exception:
                # A bug, not an outage: logged, not tried again.
                self.log.failure("re-authorising {presentity}", presentity=presentity)
            else:
                done += 1
        self._retry = failed
        if error is not None:
            if not self._outage:
                self._outage = True
                self.log.warn(
                    "rules check: the table cannot be read ({error}); {users}"
                    " users queued, checked again every {period} s",
                    error=str(error),
                    users=len(failed),
                    period=self.period,
                )
        elif self._outage:
            self._outage = False
            self.log.info("rules check: the table can be read again")
        return done


# -- the hard state (RFC 4827, pidf-manipulation) ------------------------------

#: How many users' hard state is kept at most.
HARD_STATE_LIMIT: Final = 10_000


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
    operation) and the periodic check (`RulesWatch`, through `changed`)
    read them again. In the external mode the store is the
    `FetchingXCAPStore <presence.xcap.client.FetchingXCAPStore>`, whose
    client fetches the documents.

    Reads of one user may overlap (a fan-out's first read, a reload, the
    periodic check) and finish in any order: each read is numbered when it
    starts, and what a read finds is held only when no later read's is
    already, so that the newest read is what stays.

    Attributes:
        reads: how many times the store was read (also the number of the
            last read started).
    """

    def __init__(self, documents: IXCAPStore, limit: int = HARD_STATE_LIMIT) -> None:
        """Read the hard state from ``documents``, for at most ``limit`` users."""
        self.documents = documents
        self.limit = limit
        self.reads = 0
        # By user: the number of the read that found it, and what it found.
        self._held: dict[tuple[str, str], tuple[int, HardState | None]] = {}
        self._reading: dict[tuple[str, str], list[Deferred[HardState | None]]] = {}
        # Users whose first read failed: their watchers were told the state
        # without the hard state, so the periodic check reads them again.
        self._failed: dict[tuple[str, str], None] = {}

    async def _read(self, key: tuple[str, str]) -> tuple[int, HardState | None]:
        self.reads += 1
        generation = self.reads
        rows = await self.documents.documents(key[0], key[1], (PIDF_MANIPULATION,))
        return generation, hardStateOf(rows)

    def _keep(
        self, key: tuple[str, str], generation: int, state: HardState | None
    ) -> bool:
        """Hold what read number ``generation`` found, unless a later read's is.

        Returns:
            Whether it is held now.
        """
        held = self._held
        before = held.get(key)
        if before is not None and before[0] > generation:
            return False
        held.pop(key, None)
        while len(held) >= self.limit:
            del held[next(iter(held))]
        held[key] = (generation, state)
        self._failed.pop(key, None)
        return True

    def users(self) -> list[tuple[str, str]]:
        """The users to check: those held, and those whose first read failed."""
        return [*self._held, *(key for key in self._failed if key not in self._held)]

    def current(
        self, presentity: str
    ) -> HardState | Awaitable[HardState | None] | None:
        """See `IHardState.current <presence.xcap.policy.IHardState.current>`."""
        key = _userOf(presentity)
        held = self._held.get(key)
        if held is not None:
            return held[1]
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
            generation, state = await self._read(key)
        except BaseException:
            failure = Failure()
            del self._reading[key]
            if key not in self._held:
                while len(self._failed) >= self.limit:
                    del self._failed[next(iter(self._failed))]
                self._failed[key] = None
            for waiter in waiters:
                waiter.errback(failure)
            raise
        del self._reading[key]
        held = self._held.get(key)
        if held is None:
            self._keep(key, generation, state)
        else:
            # A reload ran meanwhile: what it read is what watchers are told.
            state = held[1]
        for waiter in waiters:
            waiter.callback(state)
        return state

    async def reload(self, presentity: str) -> bool:
        """See `IHardState.reload <presence.xcap.policy.IHardState.reload>`.

        A read overtaken by a later one (which finished first) changes
        nothing and says so.
        """
        key = _userOf(presentity)
        generation, state = await self._read(key)
        before = self._held.get(key)
        if not self._keep(key, generation, state):
            return False
        if before is None:
            return state is not None
        return _tagOf(before[1]) != _tagOf(state)

    def forget(self, presentity: str) -> None:
        """Hold nothing of the presentity's: read it again next time."""
        self._held.pop(_userOf(presentity), None)

    def changed(self, key: tuple[str, str], rows: Sequence[XCAPDocument]) -> bool:
        """Whether the user's rows hold another hard state than the one held.

        ``rows`` may hold other document types (the periodic check reads
        the rules and the hard state in one query); what is held is left as
        it is (`reload` replaces it, and says it changed).
        """
        held = self._held.get(key)
        if held is None:
            # A first read failed: watchers saw no hard state.
            return key in self._failed and hardStateOf(rows) is not None
        return _tagOf(hardStateOf(rows)) != _tagOf(held[1])

    async def changedUsers(self) -> list[str]:
        """The users whose hard state in the table is not the one held.

        One query per user held; what is held is left as it is.
        """
        changed: list[str] = []
        for key in self.users():
            self.reads += 1
            rows = await self.documents.documents(key[0], key[1], (PIDF_MANIPULATION,))
            if self.changed(key, rows):
                changed.append(f"sip:{key[0]}@{key[1]}")
        return changed
