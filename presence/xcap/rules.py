"""Presence authorization rules: parsing and evaluation.

A user's rules are one or more documents of RFC 4745 common policy with the
RFC 5025 pres-rules actions and transformations and the OMA common-policy
conditions (``external-list``, ``anonymous-request``, ``other-identity``).
`parseRuleSet` reads them once into a `RuleSet`; `RuleSet.evaluate` then
decides, for one `Watcher`, the subscription handling and the permissions
(RFC 4745 section 10: every matching rule counts) as an `Outcome`;
`evaluate` is the same with "no document at all" handled too.

Nothing here reads a clock, a store or the network: the time, the
presentity's current sphere and the members of the user's resource lists are
arguments, so that a parsed rule set can be cached by its documents' entity
tags and evaluated again and again.

Fail closed: a document that cannot be read raises `RulesError`, and the
caller treats that user as having a document in which no rule matches: every
watcher is blocked (`BLOCK_ALL`) until the document is fixed. Refusing
everybody is wrong in a visible and recoverable way; guessing at what a
broken document meant could show presence to the very watchers it was
written to keep out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from enum import IntEnum
from typing import Final, cast
from urllib.parse import unquote

from lxml import etree

from presence.packages.xml import parseXML
from presence.sip.errors import BadRequest, SIPParseError
from presence.sip.uri import SIPURI, parseURI
from presence.status import ACTIVE, PENDING, TERMINATED

#: RFC 4745 common policy.
CP_NS: Final = "urn:ietf:params:xml:ns:common-policy"
#: RFC 5025 presence authorization rules.
PR_NS: Final = "urn:ietf:params:xml:ns:pres-rules"
#: OMA XDM common policy extensions.
OCP_NS: Final = "urn:oma:xml:xdm:common-policy"

_CP: Final = "{" + CP_NS + "}"
_PR: Final = "{" + PR_NS + "}"
_OCP: Final = "{" + OCP_NS + "}"

#: The URI of an anonymous watcher (RFC 3323 section 4.1.1.3).
ANONYMOUS_URI: Final = "sip:anonymous@anonymous.invalid"


class RulesError(ValueError):
    """A rules document that cannot be read.

    Raised for a body that is not well-formed XML, declares a DTD, is too
    large, is not a common-policy ``ruleset``, or breaks the schema where the
    meaning matters (an unknown ``sub-handling``, a boolean that is neither
    true nor false, a ``validity`` time without a time zone...).

    Fail closed: the caller treats the user as having a document in which no
    rule matches, which blocks every watcher (use `BLOCK_ALL`); it never
    falls back to the no-document default, which would let watchers wait
    for a confirmation the broken document may have meant to refuse.
    """


class SubHandling(IntEnum):
    """The ``sub-handling`` action (RFC 5025 section 3.2.1), by its numbers."""

    BLOCK = 0
    CONFIRM = 10
    POLITE_BLOCK = 20
    ALLOW = 30


class UserInput(IntEnum):
    """``provide-user-input`` (RFC 5025 section 3.3.2.12), by its numbers."""

    FALSE = 0
    BARE = 10
    THRESHOLDS = 20
    FULL = 30


_SUB_HANDLING: Final = {
    "block": SubHandling.BLOCK,
    "confirm": SubHandling.CONFIRM,
    "polite-block": SubHandling.POLITE_BLOCK,
    "allow": SubHandling.ALLOW,
}
_USER_INPUT: Final = {
    "false": UserInput.FALSE,
    "bare": UserInput.BARE,
    "thresholds": UserInput.THRESHOLDS,
    "full": UserInput.FULL,
}

#: The boolean attribute permissions of RFC 5025 section 3.3.2, by element
#: name, with the name of the presence attribute each grants.
BOOLEAN_PERMISSIONS: Final = {
    "provide-activities": "activities",
    "provide-class": "class",
    "provide-deviceID": "deviceID",
    "provide-mood": "mood",
    "provide-place-is": "place-is",
    "provide-place-type": "place-type",
    "provide-privacy": "privacy",
    "provide-relationship": "relationship",
    "provide-sphere": "sphere",
    "provide-status-icon": "status-icon",
    "provide-time-offset": "time-offset",
    "provide-note": "note",
}


# -- identities -------------------------------------------------------------


def identityKey(uri: str) -> str:
    """The form in which identities, list members and watchers are compared.

    A SIP or SIPS URI becomes ``scheme:user@host``: escapes in the user part
    decoded and the host in lower case (RFC 3261 section 19.1.4), without
    port, parameters or headers, which an identity does not have (RFC 5025
    section 3.1.1.2). Any other URI keeps its text, with the scheme and a
    domain after ``@`` in lower case. Surrounding white space is ignored.
    """
    text = uri.strip()
    try:
        parsed = parseURI(text)
    except SIPParseError:
        return text
    if isinstance(parsed, SIPURI):
        return f"{parsed.scheme}:{parsed.aor()}"
    rest = parsed.rest
    local, at, domain = rest.rpartition("@")
    if at:
        rest = f"{local}@{domain.lower()}"
    return f"{parsed.scheme}:{rest}"


def _domainOf(key: str) -> str | None:
    _, at, domain = key.rpartition("@")
    return domain if at and domain else None


@dataclass(frozen=True, slots=True)
class Watcher:
    """Who asks: the authenticated identity of a watcher.

    Build one with `Watcher.fromURI` or `Watcher.fromParts` once per
    request; evaluation compares these precomputed forms only.

    Attributes:
        key: the identity as `identityKey` gives it.
        domain: the domain of the identity, lower case, or ``None`` (a
            ``tel`` URI has none).
        anonymous: the request is anonymous (or unauthenticated): it matches
            no ``identity`` or ``external-list`` condition, only
            ``anonymous-request``, ``other-identity`` and rules without
            identity conditions.
    """

    key: str
    domain: str | None
    anonymous: bool = False

    @classmethod
    def fromURI(cls, uri: str, anonymous: bool = False) -> Watcher:
        """The watcher with this identity URI.

        ``sip:anonymous@anonymous.invalid`` is anonymous whatever the flag.
        """
        key = identityKey(uri)
        anonymous = anonymous or key == ANONYMOUS_URI
        return cls(key, _domainOf(key), anonymous)

    @classmethod
    def fromParts(cls, username: str, domain: str, anonymous: bool = False) -> Watcher:
        """The watcher ``sip:username@domain``, as the watchers table keeps it."""
        return cls.fromURI(f"sip:{username}@{domain}", anonymous)


ANONYMOUS: Final = Watcher.fromURI(ANONYMOUS_URI)

#: Resolves a resource list, named by its path of ``name`` attributes
#: (``friends``, or ``friends/close`` for a list inside another), to its
#: members in `identityKey` form; a mapping or a callable. A list it does not
#: know is empty (a mapping's missing key, or a callable returning an empty
#: collection or raising ``KeyError``).
ListResolver = Mapping[str, frozenset[str]] | Callable[[str], frozenset[str]]

_NO_LISTS: Final[Mapping[str, frozenset[str]]] = {}

_LIST_STEP_RE: Final = re.compile(
    r"""(?:[A-Za-z_][\w.\-]*:)?list\[@name=(?:"([^"]*)"|'([^']*)')\]"""
)
_ROOT_STEP_RE: Final = re.compile(r"(?:[A-Za-z_][\w.\-]*:)?resource-lists")


def listPath(anchor: str) -> str | None:
    """The path of list names an ``external-list`` entry's ``anc`` points at.

    ``http://xcap.example.com/resource-lists/users/sip:alice@example.com/
    index/~~/resource-lists/list%5b@name=%22friends%22%5d`` (RFC 4825 section
    6: the node selector after ``~~``, percent-encoded) gives ``friends``;
    a list inside another, ``friends/close``. The user and the document in
    the anchor are not checked: the resolver is the presentity's own lists.
    A plain name without ``~~`` or ``/`` is that name. Anything else (a
    selector of an entry, an attribute, a step that is not a list) gives
    ``None``: a list nobody is a member of.
    """
    anchor = anchor.strip()
    if "~~" not in anchor:
        if anchor and "/" not in anchor and "[" not in anchor:
            return anchor
        return None
    selector = unquote(anchor.split("~~", 1)[1]).strip("/")
    steps = selector.split("/")
    if not steps or not _ROOT_STEP_RE.fullmatch(steps[0]) or len(steps) < 2:
        return None
    names = []
    for step in steps[1:]:
        m = _LIST_STEP_RE.fullmatch(step)
        if m is None:
            return None
        names.append(m.group(1) if m.group(1) is not None else m.group(2))
    return "/".join(names)


def _members(lists: ListResolver, path: str) -> frozenset[str]:
    if isinstance(lists, Mapping):
        return lists.get(path, frozenset())
    try:
        return lists(path)
    except KeyError:
        return frozenset()


# -- permissions ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Selection:
    """Which tuples, persons or devices a watcher sees (RFC 5025 3.3.1).

    An element is provided when ``all`` is set or it meets any one of the
    criteria. The fields a kind of element has no criterion for stay empty:
    ``uris`` and ``schemes`` are for services (tuples), ``deviceIDs`` for
    devices.

    Attributes:
        all: ``all-services``, ``all-persons`` or ``all-devices``.
        uris: ``service-uri`` values, in `identityKey` form.
        schemes: ``service-uri-scheme`` values, lower case.
        deviceIDs: ``deviceID`` values.
        occurrenceIds: ``occurrence-id`` values (the elements' ``id``).
        classes: ``class`` values (RPID ``<class>``, RFC 4480 section 3.2).
    """

    all: bool = False
    uris: frozenset[str] = frozenset()
    schemes: frozenset[str] = frozenset()
    deviceIDs: frozenset[str] = frozenset()
    occurrenceIds: frozenset[str] = frozenset()
    classes: frozenset[str] = frozenset()

    def union(self, other: Selection) -> Selection:
        """What either selection provides (RFC 4745 section 10: set union)."""
        if other == NOTHING or self == other:
            return self
        if self == NOTHING:
            return other
        if self.all or other.all:
            return EVERYTHING
        return Selection(
            False,
            self.uris | other.uris,
            self.schemes | other.schemes,
            self.deviceIDs | other.deviceIDs,
            self.occurrenceIds | other.occurrenceIds,
            self.classes | other.classes,
        )

    def __bool__(self) -> bool:
        """Whether anything at all can be selected."""
        return self != NOTHING


#: Selects nothing: the default when a rule says nothing (RFC 5025 3.3).
NOTHING: Final = Selection()
#: Selects every element of its kind.
EVERYTHING: Final = Selection(all=True)


@dataclass(frozen=True, slots=True)
class Permissions:
    """What a watcher is shown: the combined transformations of RFC 5025 3.3.

    Frozen and hashable, so that a body transformed for one set of
    permissions can be cached under it and shared by every watcher with the
    same permissions. The defaults provide nothing: no tuples, persons or
    devices, no attributes.

    Attributes:
        services: ``provide-services``: which tuples.
        persons: ``provide-persons``: which ``dm:person`` elements.
        devices: ``provide-devices``: which ``dm:device`` elements.
        attributes: the attributes granted by the boolean permissions, by
            the names of `BOOLEAN_PERMISSIONS` (``activities``, ``class``,
            ``deviceID``, ``mood``, ``note``...).
        userInput: ``provide-user-input``.
        unknownAttributes: ``provide-unknown-attribute`` grants, as
            ``(namespace, local name)`` pairs.
        allAttributes: ``provide-all-attributes``.
    """

    services: Selection = NOTHING
    persons: Selection = NOTHING
    devices: Selection = NOTHING
    attributes: frozenset[str] = frozenset()
    userInput: UserInput = UserInput.FALSE
    unknownAttributes: frozenset[tuple[str, str]] = frozenset()
    allAttributes: bool = False

    def union(self, other: Permissions) -> Permissions:
        """Both combined (RFC 4745 section 10.2).

        Booleans are ORed, sets united, and ``provide-user-input`` takes
        the larger value.
        """
        if other == NO_PERMISSIONS or self == other:
            return self
        if self == NO_PERMISSIONS:
            return other
        return Permissions(
            self.services.union(other.services),
            self.persons.union(other.persons),
            self.devices.union(other.devices),
            self.attributes | other.attributes,
            max(self.userInput, other.userInput),
            self.unknownAttributes | other.unknownAttributes,
            self.allAttributes or other.allAttributes,
        )


#: Provides nothing beyond the ``<presence>`` element itself.
NO_PERMISSIONS: Final = Permissions()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the rules decided for one watcher.

    Attributes:
        subHandling: the combined ``sub-handling``.
        permissions: the combined transformations.
        documented: ``False`` when the user has no rules document at all;
            the watcher then waits for the user (pending), as OpenSIPS and
            Kamailio do without ``force_active``.
    """

    subHandling: SubHandling
    permissions: Permissions
    documented: bool = True

    @property
    def status(self) -> int:
        """The subscription status (`presence.status`) for the outcome.

        ``allow`` and ``polite-block`` are active (a politely blocked watcher
        is told it was accepted, and sees only the offline document);
        ``confirm`` is pending; ``block`` is terminated.
        """
        return _STATUS[self.subHandling]

    @property
    def reason(self) -> str | None:
        """``rejected`` for a blocked watcher, else ``None``."""
        return "rejected" if self.subHandling == SubHandling.BLOCK else None

    @property
    def politeBlock(self) -> bool:
        """Whether the watcher must see only the offline document.

        RFC 5025 section 3.2.1: polite-block places the subscription in the
        active state and gives the watcher a document that says the
        presentity is unavailable, so that it cannot tell it was blocked.
        """
        return self.subHandling == SubHandling.POLITE_BLOCK


_STATUS: Final = {
    SubHandling.BLOCK: TERMINATED,
    SubHandling.CONFIRM: PENDING,
    SubHandling.POLITE_BLOCK: ACTIVE,
    SubHandling.ALLOW: ACTIVE,
}

#: The outcome for a user without any rules document: pending.
NO_RULES: Final = Outcome(SubHandling.CONFIRM, NO_PERMISSIONS, documented=False)
#: The outcome when a document exists but no rule matches: block (RFC 5025
#: section 3.2.1, the lowest value of RFC 4745 section 10.2).
BLOCKED: Final = Outcome(SubHandling.BLOCK, NO_PERMISSIONS)


# -- conditions -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Many:
    domain: str | None
    exceptIds: frozenset[str]
    exceptDomains: frozenset[str]


class _Identity:
    """One ``<identity>`` condition: true when any ``one`` or ``many`` matches."""

    __slots__ = ("anyDomain", "byDomain", "ones")

    def __init__(self, ones: frozenset[str], many: list[_Many]) -> None:
        self.ones = ones
        self.byDomain: dict[str, tuple[_Many, ...]] = {}
        anyDomain = []
        for item in many:
            if item.domain is None:
                anyDomain.append(item)
            else:
                self.byDomain[item.domain] = (*self.byDomain.get(item.domain, ()), item)
        self.anyDomain = tuple(anyDomain)

    def matches(self, watcher: Watcher) -> bool:
        if watcher.key in self.ones:
            return True
        domain = watcher.domain
        candidates = self.anyDomain
        if domain is not None and domain in self.byDomain:
            candidates = self.byDomain[domain] + candidates
        for many in candidates:
            if watcher.key in many.exceptIds:
                continue
            if domain is not None and domain in many.exceptDomains:
                continue
            return True
        return False


class _Rule:
    """One rule, parsed: its conditions, its sub-handling and permissions."""

    __slots__ = (
        "anonymous",
        "hasIdentity",
        "identities",
        "lists",
        "never",
        "other",
        "permissions",
        "spheres",
        "subHandling",
        "validities",
    )

    def __init__(self) -> None:
        self.identities: list[_Identity] = []
        self.lists: list[tuple[str | None, ...]] = []
        self.anonymous = False
        self.other = False
        self.spheres: list[frozenset[str]] = []
        self.validities: list[tuple[tuple[float, float], ...]] = []
        # An unknown condition: the rule never applies (RFC 4745 section 7).
        self.never = False
        self.hasIdentity = False
        self.subHandling: SubHandling | None = None
        self.permissions = NO_PERMISSIONS

    def identityMatches(self, watcher: Watcher, lists: ListResolver) -> bool:
        """Whether every identity-like condition holds for the watcher."""
        if self.anonymous and not watcher.anonymous:
            return False
        if watcher.anonymous and (self.identities or self.lists):
            return False
        for identity in self.identities:
            if not identity.matches(watcher):
                return False
        for paths in self.lists:
            for path in paths:
                if path is not None and watcher.key in _members(lists, path):
                    break
            else:
                return False
        return True

    def restMatches(self, now: float, sphere: str | None) -> bool:
        """Whether the sphere (lower case) and validity conditions hold."""
        for values in self.spheres:
            if sphere is None or sphere not in values:
                return False
        for intervals in self.validities:
            for start, until in intervals:
                if start <= now < until:
                    break
            else:
                return False
        return True


class RuleSet:
    """A user's rules, parsed once from all of the user's documents.

    Evaluating a watcher reads only what was prepared at parse time, and the
    combination of each distinct set of matching rules is computed once and
    kept, so the same `Outcome` (and `Permissions`) object comes back for
    every watcher that matches the same rules.
    """

    __slots__ = ("_combined", "rules")

    #: How many combinations are kept before the memo starts again.
    MEMO_SIZE: Final = 1024

    def __init__(self, rules: Iterable[_Rule] = ()) -> None:
        """Hold these rules (`parseRuleSet` builds them)."""
        self.rules: tuple[_Rule, ...] = tuple(rules)
        self._combined: dict[int, Outcome] = {}

    def __len__(self) -> int:
        """How many rules there are, from every document."""
        return len(self.rules)

    def evaluate(
        self,
        watcher: Watcher,
        now: float,
        sphere: str | None = None,
        lists: ListResolver = _NO_LISTS,
    ) -> Outcome:
        """The outcome for one watcher (RFC 4745 sections 7 and 10).

        A rule matches when all its conditions hold; a rule without
        conditions matches everybody. ``other-identity`` holds when no other
        rule's identity conditions (``identity``, ``external-list``,
        ``anonymous-request``) hold for the watcher, whatever those rules'
        other conditions. No matching rule gives `BLOCKED`.

        Args:
            watcher: who asks.
            now: the time, in POSIX seconds (the reactor's ``seconds()``),
                for ``validity``.
            sphere: the presentity's current sphere (RPID ``<sphere>``, which
                `presence.xcap.transform.currentSphere` reads from the PIDF),
                or ``None``: then no ``sphere`` condition holds.
            lists: the members of the user's resource lists, for
                ``external-list``.
        """
        if sphere is not None:
            sphere = sphere.strip().lower()
        mask = 0
        identified = 0
        others: list[tuple[int, bool]] = []
        for bit, rule in enumerate(self.rules):
            if rule.hasIdentity:
                if not rule.identityMatches(watcher, lists):
                    continue
                identified += 1
            if rule.never or not rule.restMatches(now, sphere):
                continue
            if rule.other:
                others.append((bit, rule.hasIdentity))
                continue
            mask |= 1 << bit
        for bit, itself in others:
            if identified - itself == 0:
                mask |= 1 << bit
        outcome = self._combined.get(mask)
        if outcome is None:
            outcome = self._combine(mask)
        return outcome

    def _combine(self, mask: int) -> Outcome:
        handling: SubHandling | None = None
        permissions = NO_PERMISSIONS
        for bit, rule in enumerate(self.rules):
            if not mask >> bit & 1:
                continue
            if rule.subHandling is not None and (
                handling is None or rule.subHandling > handling
            ):
                handling = rule.subHandling
            permissions = permissions.union(rule.permissions)
        if handling is None and permissions == NO_PERMISSIONS:
            outcome = BLOCKED
        else:
            outcome = Outcome(
                SubHandling.BLOCK if handling is None else handling, permissions
            )
        if len(self._combined) >= self.MEMO_SIZE:
            self._combined.clear()
        self._combined[mask] = outcome
        return outcome


#: The rule set of a user whose document could not be read: blocks everyone.
BLOCK_ALL: Final = RuleSet()


def evaluate(
    ruleSet: RuleSet | None,
    watcher: Watcher,
    now: float,
    sphere: str | None = None,
    lists: ListResolver = _NO_LISTS,
) -> Outcome:
    """`RuleSet.evaluate`, with ``None`` for a user who has no document.

    No document at all gives `NO_RULES` (pending, as OpenSIPS and Kamailio
    do); a document in which no rule matches gives `BLOCKED`.
    """
    if ruleSet is None:
        return NO_RULES
    return ruleSet.evaluate(watcher, now, sphere, lists)


# -- parsing ----------------------------------------------------------------


def parseRuleSet(documents: Iterable[bytes]) -> RuleSet:
    """Parse all of a user's rules documents into one rule set.

    RFC 5025 section 9.7: the server uses "all documents found beneath"
    the user's directory, so the rules of every document (the OpenSIPS
    ``xcap`` table's pres-rules and OMA pres-rules rows) are evaluated
    together, as one rule set. Comments, processing instructions, white
    space and the choice of namespace prefixes change nothing.

    Raises:
        RulesError: a document cannot be read (see `RulesError`: the caller
            then uses `BLOCK_ALL` for the user).
        ValueError: there are no documents at all (use ``evaluate(None,
            ...)`` for that user instead).
    """
    rules: list[_Rule] = []
    count = 0
    for document in documents:
        count += 1
        rules.extend(_parseDocument(document))
    if not count:
        raise ValueError("no rules documents: use evaluate(None, ...)")
    return RuleSet(rules)


def _elements(parent: etree._Element) -> list[etree._Element]:
    return [child for child in parent if isinstance(child.tag, str)]


def _name(element: etree._Element) -> str:
    return etree.QName(element).localname


def _text(element: etree._Element) -> str:
    """The text of a simple-valued element, comments left out, trimmed."""
    for child in element:
        if isinstance(child.tag, str):
            raise RulesError(f"<{_name(element)}> must hold text, not elements")
    return elementText(element)


def elementText(element: etree._Element) -> str:
    """All the text inside an element, comments left out, trimmed."""
    return "".join(cast(Iterator[str], element.itertext())).strip()


def _attribute(element: etree._Element, name: str) -> str:
    value = element.get(name)
    if value is None or not value.strip():
        raise RulesError(f"<{_name(element)}> needs a {name!r} attribute")
    return value.strip()


def _boolean(element: etree._Element) -> bool:
    value = _text(element)
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise RulesError(f"<{_name(element)}> must be true or false, not {value!r}")


def _unexpected(element: etree._Element, where: str) -> RulesError:
    return RulesError(f"unexpected <{_name(element)}> in {where}")


def _parseDocument(document: bytes) -> list[_Rule]:
    try:
        root = parseXML(document, "rules")
    except BadRequest as e:
        raise RulesError(e.reason) from None
    except (etree.LxmlError, ValueError) as e:
        raise RulesError(f"malformed rules: {e}") from None
    if root.tag != _CP + "ruleset":
        raise RulesError("the root must be <ruleset> in the common-policy namespace")
    rules = []
    for child in _elements(root):
        if child.tag != _CP + "rule":
            raise _unexpected(child, "<ruleset>")
        rules.append(_parseRule(child))
    return rules


def _parseRule(element: etree._Element) -> _Rule:
    rule = _Rule()
    seen = set()
    for child in _elements(element):
        tag = child.tag
        if tag in seen:
            raise RulesError(f"more than one <{_name(child)}> in a rule")
        seen.add(tag)
        if tag == _CP + "conditions":
            _parseConditions(child, rule)
        elif tag == _CP + "actions":
            _parseActions(child, rule)
        elif tag == _CP + "transformations":
            rule.permissions = _parseTransformations(child)
        else:
            raise _unexpected(child, "<rule>")
    rule.hasIdentity = bool(rule.identities or rule.lists or rule.anonymous)
    return rule


def _parseConditions(element: etree._Element, rule: _Rule) -> None:
    for child in _elements(element):
        tag = child.tag
        if tag == _CP + "identity":
            rule.identities.append(_parseIdentity(child))
        elif tag == _CP + "sphere":
            values = _attribute(child, "value").lower().split()
            rule.spheres.append(frozenset(values))
        elif tag == _CP + "validity":
            rule.validities.append(_parseValidity(child))
        elif tag == _OCP + "external-list":
            rule.lists.append(_parseExternalList(child))
        elif tag == _OCP + "anonymous-request":
            rule.anonymous = True
        elif tag == _OCP + "other-identity":
            rule.other = True
        elif tag.startswith(_CP):
            raise _unexpected(child, "<conditions>")
        else:
            # RFC 4745 section 7: a condition the server does not understand
            # is false, so the rule never applies.
            rule.never = True


def _parseIdentity(element: etree._Element) -> _Identity:
    ones = set()
    many = []
    for child in _elements(element):
        tag = child.tag
        if tag == _CP + "one":
            ones.add(identityKey(_attribute(child, "id")))
        elif tag == _CP + "many":
            many.append(_parseMany(child))
        elif tag.startswith(_CP):
            raise _unexpected(child, "<identity>")
        # An identity form of another namespace is not understood: it
        # matches nobody.
    return _Identity(frozenset(ones), many)


def _parseMany(element: etree._Element) -> _Many:
    domain = element.get("domain")
    exceptIds = set()
    exceptDomains = set()
    for child in _elements(element):
        if child.tag == _CP + "except":
            ident = child.get("id")
            if ident is not None and ident.strip():
                exceptIds.add(identityKey(ident))
            exceptDomain = child.get("domain")
            if exceptDomain is not None and exceptDomain.strip():
                exceptDomains.add(exceptDomain.strip().lower())
        elif child.tag.startswith(_CP):
            raise _unexpected(child, "<many>")
    return _Many(
        domain.strip().lower() if domain is not None and domain.strip() else None,
        frozenset(exceptIds),
        frozenset(exceptDomains),
    )


def _parseExternalList(element: etree._Element) -> tuple[str | None, ...]:
    paths = []
    for child in _elements(element):
        if child.tag == _OCP + "entry":
            paths.append(listPath(child.get("anc") or ""))
        elif child.tag.startswith(_OCP):
            raise _unexpected(child, "<external-list>")
    return tuple(paths)


_DATETIME_RE: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?"
    r"(Z|[+-]\d{2}:\d{2})"
)


def parseDateTime(text: str) -> float:
    """An ``xs:dateTime`` with its time zone, as POSIX seconds.

    RFC 4745 section 7.3 wants the times of ``validity`` with a time zone
    ("2003-08-15T10:20:00.000-05:00"); ``24:00:00`` is the next midnight.

    Raises:
        RulesError: not such a time.
    """
    m = _DATETIME_RE.fullmatch(text.strip())
    if m is None:
        raise RulesError(f"not a dateTime with a time zone: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction = float(m.group(7)) if m.group(7) else 0.0
    zone = m.group(8)
    try:
        if zone == "Z":
            tz = UTC
        else:
            hours, minutes = int(zone[1:3]), int(zone[4:6])
            if hours > 14 or minutes > 59 or (hours == 14 and minutes):
                raise ValueError("time zone out of range")
            offset = timedelta(hours=hours, minutes=minutes)
            tz = timezone(-offset if zone[0] == "-" else offset)
        midnight = hour == 24
        if midnight:
            if minute or second or fraction:
                raise ValueError("24:00:00 only")
            hour = 0
        when = datetime(year, month, day, hour, minute, second, tzinfo=tz)
        if midnight:
            when += timedelta(days=1)
        return when.timestamp() + fraction
    except (ValueError, OverflowError):
        raise RulesError(f"not a dateTime with a time zone: {text!r}") from None


def _parseValidity(element: etree._Element) -> tuple[tuple[float, float], ...]:
    intervals = []
    start: float | None = None
    for child in _elements(element):
        if child.tag == _CP + "from" and start is None:
            start = parseDateTime(_text(child))
        elif child.tag == _CP + "until" and start is not None:
            intervals.append((start, parseDateTime(_text(child))))
            start = None
        else:
            raise RulesError("<validity> holds <from> and <until> pairs")
    if start is not None or not intervals:
        raise RulesError("<validity> holds <from> and <until> pairs")
    return tuple(intervals)


def _parseActions(element: etree._Element, rule: _Rule) -> None:
    for child in _elements(element):
        if child.tag == _PR + "sub-handling":
            value = _text(child)
            if value not in _SUB_HANDLING:
                raise RulesError(f"unknown sub-handling {value!r}")
            handling = _SUB_HANDLING[value]
            if rule.subHandling is None or handling > rule.subHandling:
                rule.subHandling = handling
        elif child.tag.startswith(_CP):
            raise _unexpected(child, "<actions>")
        # Actions of other namespaces are not understood; they grant nothing.


def _parseSelection(element: etree._Element, kind: str) -> Selection:
    everything = False
    values: dict[str, set[str]] = {
        "uris": set(),
        "schemes": set(),
        "deviceIDs": set(),
        "occurrenceIds": set(),
        "classes": set(),
    }
    allowed = {
        "services": {"service-uri", "service-uri-scheme", "occurrence-id", "class"},
        "persons": {"occurrence-id", "class"},
        "devices": {"deviceID", "occurrence-id", "class"},
    }[kind]
    for child in _elements(element):
        if not child.tag.startswith(_PR):
            continue  # a criterion of another namespace selects nothing
        name = _name(child)
        if name == "all-" + kind:
            everything = True
        elif name not in allowed:
            raise _unexpected(child, f"<provide-{kind}>")
        elif name == "service-uri":
            values["uris"].add(identityKey(_text(child)))
        elif name == "service-uri-scheme":
            values["schemes"].add(_text(child).lower())
        elif name == "deviceID":
            values["deviceIDs"].add(_text(child))
        elif name == "occurrence-id":
            values["occurrenceIds"].add(_text(child))
        else:
            values["classes"].add(_text(child))
    if everything:
        return EVERYTHING
    selection = Selection(
        uris=frozenset(values["uris"]),
        schemes=frozenset(values["schemes"]),
        deviceIDs=frozenset(values["deviceIDs"]),
        occurrenceIds=frozenset(values["occurrenceIds"]),
        classes=frozenset(values["classes"]),
    )
    return NOTHING if selection == NOTHING else selection


def _parseTransformations(element: etree._Element) -> Permissions:
    services = persons = devices = NOTHING
    attributes: set[str] = set()
    userInput = UserInput.FALSE
    unknown: set[tuple[str, str]] = set()
    allAttributes = False
    for child in _elements(element):
        tag = child.tag
        if tag.startswith(_CP):
            raise _unexpected(child, "<transformations>")
        if not tag.startswith(_PR):
            continue  # not understood: grants nothing
        name = _name(child)
        if name == "provide-services":
            services = services.union(_parseSelection(child, "services"))
        elif name == "provide-persons":
            persons = persons.union(_parseSelection(child, "persons"))
        elif name == "provide-devices":
            devices = devices.union(_parseSelection(child, "devices"))
        elif name in BOOLEAN_PERMISSIONS:
            if _boolean(child):
                attributes.add(BOOLEAN_PERMISSIONS[name])
        elif name == "provide-user-input":
            value = _text(child)
            if value not in _USER_INPUT:
                raise RulesError(f"unknown provide-user-input {value!r}")
            userInput = max(userInput, _USER_INPUT[value])
        elif name == "provide-unknown-attribute":
            pair = (_attribute(child, "ns"), _attribute(child, "name"))
            if _boolean(child):
                unknown.add(pair)
        elif name == "provide-all-attributes":
            allAttributes = True
        # Other pres-rules elements (a later revision's) grant nothing.
    return Permissions(
        services,
        persons,
        devices,
        frozenset(attributes),
        userInput,
        frozenset(unknown),
        allAttributes,
    )
