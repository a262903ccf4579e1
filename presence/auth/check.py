"""The request check that finds out who sent a request: `IdentityCheck`.

The dispatcher runs it before routing (after the readiness check). A
request from a trusted peer is believed: its P-Asserted-Identity, or its
From, is the identity. Any other request, when ``authentication`` is on and
its method is not one of `UNCHALLENGED`, must carry a digest response that
`DigestAuthenticator` verifies; without one it gets 401 with a challenge
per configured algorithm, most preferred first (RFC 8760 section 2.3).

The realm is ``auth_realm`` when set; otherwise the domain of the address
of record the request claims to come from (`claimedAddress`), and the
credentials are looked up by the digest ``username`` and that domain
(OpenSIPS's ``subscriber`` keying), so the identity is ``username@domain``.

What a failure gets:

- no digest response for this realm and an offered algorithm: 401, fresh
  challenges;
- a malformed Authorization header, or one without ``qop=auth``: 400;
- a ``uri`` that is not the Request-URI: 400 (RFC 7616 section 3.4);
- a nonce this server's secret did not sign for the realm: 401, fresh
  challenges;
- an unknown user, or a wrong response: the same 401 with fresh challenges
  (which of the two it was is not told);
- the right response to a nonce past its lifetime: 401 with
  ``stale=true``;
- the right response with a nonce count not above the last one accepted
  for that nonce (a replay): 401 with ``stale=true`` too, since the
  credentials were right and a new nonce is all the client needs.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from types import CoroutineType
from typing import Any, Final, TypeVar, cast

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from presence.auth.digest import (
    HA1_FIELDS,
    HASH_FUNCTIONS,
    QOP,
    DigestCredentials,
    DigestError,
    NonceCounts,
    Nonces,
    NonceState,
    challenge,
    digestHash,
    parseCredentials,
    storedHA1,
)
from presence.auth.identity import (
    DIGEST,
    Identity,
    TrustedPeers,
    assertedIdentity,
    fromIdentity,
)
from presence.sip.errors import BadRequest, Forbidden, SIPParseError, Unauthorized
from presence.sip.message import SIPURI, URI, SIPRequest, parseURI
from presence.sip.transaction import ServerTransaction
from presence.sip.transport import Peer
from presence.storage.credentials import UNKNOWN, Credentials, ICredentialStore

_T = TypeVar("_T")

# Read once: an Enum member read through its class costs a few tenths of a
# microsecond, once per request here.
_FORGED: Final = NonceState.FORGED
_STALE: Final = NonceState.STALE

#: Methods never challenged. OPTIONS says what the server can do; ACK and
#: CANCEL cannot be resubmitted with credentials (RFC 3261 section 22),
#: and the transaction layer answers them before the dispatcher sees them.
UNCHALLENGED: Final = frozenset({"OPTIONS", "ACK", "CANCEL"})


def claimedAddress(request: SIPRequest) -> URI:
    """The address of record a request claims to come from: the one authenticated.

    - REGISTER: the To, the address of record whose bindings are changed
      (RFC 3261 section 10.2; the From may be a third party's).
    - PUBLISH: the Request-URI, the presentity whose state is published: only
      the presentity may publish it.
    - SUBSCRIBE, and every other method: the From, the watcher. It is the
      same for an initial SUBSCRIBE and every request of its dialog (RFC 3261
      section 12.2.1.1: the From URI of a request in a dialog is the
      dialog's remote URI), whatever the in-dialog Request-URI (the server's
      own Contact) says, and its domain holds the watcher's credentials
      when the presentity is in another domain.

    This is also what OpenSIPS's ``www_authorize`` takes the realm from when
    it is given none (To for REGISTER, From otherwise), but for PUBLISH.
    """
    if request.method == "REGISTER":
        return request.toAddr.uri
    if request.method == "PUBLISH":
        return request.uri
    return request.fromAddr.uri


class DigestAuthenticator:
    """Challenges requests and verifies their digest responses.

    Attributes:
        algorithms: the algorithms offered, most preferred first.
        realm: the realm of every challenge, or ``None`` for the domain of
            the claimed address of record.
        nonces: issues and verifies the nonces.
        counts: the nonce counts seen, for replay detection.
        credentials: where users' credentials are read.
        memoryLimit: how many identities, and how many ``H(A2)``, are
            kept at most (all are forgotten when the limit is reached).
        stats: how many requests were challenged (no response), refused
            (forged nonce, unknown user, wrong response), found stale or
            replayed, and authenticated.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        credentials: ICredentialStore,
        secret: bytes,
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
        realm: str | None = None,
        nonceLifetime: float = 300,
        nonceCountLimit: int = 65_536,
    ) -> None:
        """Verify responses against ``credentials``, nonces signed with ``secret``.

        Args:
            clock: the clock nonces are dated by.
            credentials: where users' credentials are read.
            secret: the key nonces are signed with.
            algorithms: the algorithms offered, most preferred first; names
                of `presence.auth.digest.ALGORITHMS`.
            realm: the realm of every challenge; ``None`` for the domain of
                the address of record `claimedAddress` names.
            nonceLifetime: seconds a nonce is valid.
            nonceCountLimit: how many nonces' counts are remembered.
        """
        self.credentials = credentials
        self.memoryLimit = 4096
        self.algorithms = tuple(algorithms)
        self.realm = realm
        self.nonces = Nonces(secret, clock, nonceLifetime)
        self.counts = NonceCounts(clock, nonceLifetime, nonceCountLimit)
        self.stats = {
            "challenged": 0,
            "refused": 0,
            "stale": 0,
            "replayed": 0,
            "authenticated": 0,
        }
        self._warned: set[tuple[str, str, str]] = set()
        # What is the same from one request of a client to the next, kept
        # so as not to be made again: identities (immutable) and H(A2).
        self._identities: dict[tuple[str, str], Identity] = {}
        self._ha2s: dict[tuple[str, str, str], str] = {}
        # user, domain, algorithm, realm -> the credentials read, their HA1.
        self._ha1s: dict[tuple[str, str, str, str], tuple[Credentials, str | None]] = {}

    def realmOf(self, request: SIPRequest) -> tuple[str, str]:
        """The realm of a request's challenge, and the domain of its user.

        Raises:
            Forbidden: the claimed address is not a SIP URI, so no domain
                holds its credentials.
        """
        uri = claimedAddress(request)
        if not isinstance(uri, SIPURI):
            raise Forbidden("only a SIP address of record can be authenticated")
        domain = uri.host.lower()
        return (self.realm if self.realm is not None else domain), domain

    def challenges(self, realm: str, stale: bool = False) -> Unauthorized:
        """A 401 with a fresh nonce, challenged once per algorithm."""
        nonce = self.nonces.issue(realm)
        return Unauthorized(
            [challenge(realm, nonce, algorithm, stale) for algorithm in self.algorithms]
        )

    def response(self, request: SIPRequest, realm: str) -> DigestCredentials | None:
        """The digest response of a request that answers this server's challenge.

        The first Authorization header of the Digest scheme, for ``realm``,
        with an algorithm offered; the others are for someone else.

        Raises:
            BadRequest: an Authorization header is malformed.
        """
        found = None
        for line in request.headerLines("authorization"):
            try:
                credentials = parseCredentials(line)
            except DigestError as e:
                raise BadRequest(f"malformed Authorization: {e.reason}") from None
            if (
                found is None
                and credentials is not None
                and credentials.realm == realm
                and credentials.algorithm in self.algorithms
            ):
                found = credentials
        return found

    @property
    def credentials(self) -> ICredentialStore:
        """Where users' credentials are read."""
        return self._credentials

    @credentials.setter
    def credentials(self, store: ICredentialStore) -> None:
        self._credentials = store
        # A store that can say at once what it knows (`peek`): asked first,
        # without a coroutine, which costs more than the look-up.
        self._peek: Callable[[str, str], object] | None = getattr(store, "peek", None)

    def authenticate(
        self, request: SIPRequest, peer: Peer
    ) -> Identity | Awaitable[Identity]:
        """Verify a request's digest response; the identity it proves.

        At once when the credential store answers at once (a user in memory,
        or in the few seconds' cache): a client that reuses its nonce costs
        no suspension and no Deferred. Otherwise an awaitable of the
        identity, which raises the same errors.

        Raises:
            Unauthorized: no response, a forged or stale nonce, an unknown
                user, a wrong response, or a replay.
            BadRequest: a malformed Authorization, or its ``uri`` is not the
                Request-URI.
            Forbidden: the claimed address is not a SIP URI.
        """
        # realmOf, inline: this runs for every request authenticated.
        method = request.method
        if method == "PUBLISH":
            uri = request.uri
        elif method == "REGISTER":
            uri = request.toAddr.uri
        else:
            uri = request.fromAddr.uri
        if not isinstance(uri, SIPURI):
            raise Forbidden("only a SIP address of record can be authenticated")
        domain = uri.host.lower()
        realm = self.realm if self.realm is not None else domain
        lines = request.headerLines("authorization")
        if len(lines) == 1:
            # response(), for the one Authorization header of nearly every
            # request.
            try:
                response = parseCredentials(lines[0])
            except DigestError as e:
                raise BadRequest(f"malformed Authorization: {e.reason}") from None
            if response is not None and (
                response.realm != realm or response.algorithm not in self.algorithms
            ):
                response = None
        else:
            response = self.response(request, realm)
        if response is None:
            self.stats["challenged"] += 1
            raise self.challenges(realm)
        if response.uri != request.uriText and not _sameURI(response.uri, request):
            raise BadRequest("the digest uri is not the Request-URI")
        nonces = self.nonces
        now = nonces.clock.seconds()
        state, issued = nonces.check(response.nonce, realm, now)
        if state is _FORGED:
            self.stats["refused"] += 1
            self.log.info(
                "{method} from {peer}: a nonce this server did not issue",
                method=method,
                peer=peer,
            )
            raise self.challenges(realm)
        username = response.username
        peek = self._peek
        if peek is not None:
            known = peek(username, domain)
            if known is not UNKNOWN:
                return self._verify(
                    request,
                    peer,
                    response,
                    realm,
                    domain,
                    state,
                    issued,
                    cast("Credentials | None", known),
                    now,
                )
        lookup = self._credentials.credentials(username, domain)
        if type(lookup) is CoroutineType or isinstance(lookup, Coroutine):
            try:
                waiting = lookup.send(None)
            except StopIteration as done:
                credentials = done.value
                return self._verify(
                    request, peer, response, realm, domain, state, issued, credentials
                )
            lookup = _resumed(lookup, waiting)
        return self._verifyLater(
            request, peer, response, realm, domain, state, issued, lookup
        )

    async def _verifyLater(
        self,
        request: SIPRequest,
        peer: Peer,
        response: DigestCredentials,
        realm: str,
        domain: str,
        state: NonceState,
        issued: float,
        lookup: Awaitable[Credentials | None],
    ) -> Identity:
        """`_verify`, once the credential store has answered."""
        credentials = await lookup
        return self._verify(
            request, peer, response, realm, domain, state, issued, credentials
        )

    def _verify(
        self,
        request: SIPRequest,
        peer: Peer,
        response: DigestCredentials,
        realm: str,
        domain: str,
        state: NonceState,
        issued: float,
        credentials: Credentials | None,
        now: float | None = None,
    ) -> Identity:
        """Check a response against the user's credentials (see `authenticate`).

        ``now`` is the time the nonce was checked at, when that was just
        now; ``None`` (after a wait for the store) reads the clock again.
        """
        algorithm = response.algorithm
        assert algorithm is not None
        ha1 = None
        if credentials is not None:
            # storedHA1, its common case inline: the hash is kept.
            stored: str = getattr(credentials, HA1_FIELDS[algorithm])
            ha1 = stored.lower() if stored else self._ha1(credentials, algorithm, realm)
            if ha1 is None:
                self._noHash(response.username, domain, algorithm)
        nonce = response.nonce
        ha2 = self._ha2(algorithm, request.method, response.uri)
        # responseOfHA2, inline: one text, encoded once, hashed once.
        expected = (
            HASH_FUNCTIONS[algorithm](
                f"{ha1}:{nonce}:{response.nc}:{response.cnonce}:{QOP}:{ha2}".encode(
                    "utf-8", "surrogateescape"
                )
            )
            .hexdigest()
            .encode("ascii")
        )
        # Compared as bytes: compare_digest refuses str with non-ASCII
        # characters, which a client's response may hold.
        given = response.response.encode("utf-8", "surrogateescape")
        if ha1 is None or not hmac.compare_digest(expected, given):
            # An unknown user and a wrong password look the same from outside.
            self.stats["refused"] += 1
            self.log.info(
                "{method} from {peer}: wrong credentials for {user}@{domain}",
                method=request.method,
                peer=peer,
                user=response.username,
                domain=domain,
            )
            raise self.challenges(realm)
        if state is _STALE:
            self.stats["stale"] += 1
            raise self.challenges(realm, stale=True)
        if not self.counts.advance(nonce, issued, int(response.nc, 16), now):
            self.stats["replayed"] += 1
            self.log.info(
                "{method} from {peer}: nonce count {nc} of {user}@{domain} replayed",
                method=request.method,
                peer=peer,
                nc=response.nc,
                user=response.username,
                domain=domain,
            )
            raise self.challenges(realm, stale=True)
        self.stats["authenticated"] += 1
        key = (response.username, domain)
        identity = self._identities.get(key)
        if identity is None:
            if len(self._identities) >= self.memoryLimit:
                self._identities.clear()
            identity = self._identities[key] = Identity(*key, DIGEST)
        return identity

    def _ha1(self, credentials: Credentials, algorithm: str, realm: str) -> str | None:
        """`storedHA1`, kept while the store answers with the same credentials.

        For a user whose row keeps only the clear password: HA1 is then a
        hash of it, the same for every request until the row changes. Kept
        by the credentials object itself (compared by identity): a password
        changed or a user removed is a new answer of the store (at most its
        cache's few seconds later), worked out afresh. At most `memoryLimit`
        are kept.
        """
        key = (credentials.username, credentials.domain, algorithm, realm)
        kept = self._ha1s.get(key)
        if kept is not None and kept[0] is credentials:
            return kept[1]
        ha1 = storedHA1(credentials, algorithm, realm)
        if len(self._ha1s) >= self.memoryLimit:
            self._ha1s.clear()
        self._ha1s[key] = (credentials, ha1)
        return ha1

    def _ha2(self, algorithm: str, method: str, uri: str) -> str:
        """``H(A2)``, ``H(method:uri)``: kept, at most `memoryLimit` of them.

        It is the same for every request a client sends to one URI.
        """
        key = (algorithm, method, uri)
        ha2 = self._ha2s.get(key)
        if ha2 is None:
            if len(self._ha2s) >= self.memoryLimit:
                self._ha2s.clear()
            ha2 = self._ha2s[key] = digestHash(algorithm, f"{method}:{uri}")
        return ha2

    def _noHash(self, user: str, domain: str, algorithm: str) -> None:
        """Say once that a user's row cannot answer an algorithm offered."""
        key = (user, domain, algorithm)
        if key in self._warned or len(self._warned) >= 1000:
            return
        self._warned.add(key)
        self.log.warn(
            "{user}@{domain} has neither a {algorithm} hash nor a password: it"
            " cannot authenticate with {algorithm} (presence-ctl user add"
            " writes every hash)",
            user=user,
            domain=domain,
            algorithm=algorithm,
        )


def _sameURI(text: str, request: SIPRequest) -> bool:
    """Whether a digest ``uri`` designates the Request-URI.

    The same text, or a SIP URI equal to it by RFC 3261 section 19.1.4.
    """
    if text == request.uriText:
        return True
    try:
        return parseURI(text) == request.uri
    except SIPParseError:
        return False


async def _resumed(coroutine: Coroutine[Any, Any, _T], waiting: Any) -> _T:
    """Go on with a coroutine that was started by hand and is waiting.

    ``coroutine.send(None)`` ran it until it awaited ``waiting`` (a Deferred,
    for the stores of this server); this awaits that in its place, hands
    the result or the exception back to it, and so on until it returns.
    """
    while True:
        try:
            result = await waiting
        except BaseException as e:  # handed back, whatever it is
            try:
                waiting = coroutine.throw(e)
            except StopIteration as done:
                return cast(_T, done.value)
        else:
            try:
                waiting = coroutine.send(result)
            except StopIteration as done:
                return cast(_T, done.value)


class IdentityCheck:
    """The request check naming who sent a request, challenging when it must.

    Called by the dispatcher with each request about to be routed and its
    transaction; returns the `Identity`, ``None`` when nothing is known
    (authentication off, or a method never challenged), or an awaitable of
    the identity when a digest response has to be verified.

    Attributes:
        trusted: the peers whose requests are believed.
        authenticator: verifies digest responses; ``None`` when
            ``authentication`` is off.
    """

    def __init__(
        self,
        trusted: TrustedPeers | None = None,
        authenticator: DigestAuthenticator | None = None,
    ) -> None:
        """Believe ``trusted`` peers; challenge the others with ``authenticator``."""
        self.trusted = trusted if trusted is not None else TrustedPeers()
        self.authenticator = authenticator

    def __call__(
        self, request: SIPRequest, transaction: ServerTransaction
    ) -> Identity | Awaitable[Identity] | None:
        """The identity of a request's sender (see the class).

        Raises:
            BadRequest: a trusted peer's P-Asserted-Identity is malformed.
        """
        peer = transaction.peer
        if peer.host in self.trusted:
            return assertedIdentity(request) or fromIdentity(request)
        if self.authenticator is None or request.method in UNCHALLENGED:
            return None
        return self.authenticator.authenticate(request, peer)
