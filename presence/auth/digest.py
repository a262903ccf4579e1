"""The digest scheme (RFC 7616, as RFC 8760 brings it to SIP), with stateless nonces.

Hashes and responses: `computeHA1`, `digestResponse`, over the algorithms
of `ALGORITHMS`. Headers: `challenge` writes a WWW-Authenticate value,
`parseCredentials` reads an Authorization one. The client's side
(`parseChallenge`, `answerChallenge`) is here too, for tests and tools.

Nonces (`Nonces`) are not stored: each carries the time it was issued and a
random salt, signed with HMAC-SHA-256 over the realm it was issued for, so
any server holding the same secret verifies it, and tells a forged nonce
from a genuine one that has expired. What cannot be stateless is replay
detection: `NonceCounts` remembers, per nonce, the highest nonce-count
accepted, for as long as the nonce lives, and at most a fixed number of
nonces.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import struct
from collections import OrderedDict
from collections.abc import Callable
from enum import Enum
from typing import Any, Final, NamedTuple

from twisted.internet.interfaces import IReactorTime

from presence.sip.grammar import quote, unquote
from presence.storage.credentials import Credentials

#: The algorithms this server computes (RFC 8760 section 2.1), by the name
#: the ``algorithm`` parameter gives them, with the name of their hashlib
#: function.
ALGORITHMS: Final = {
    "MD5": "md5",
    "SHA-256": "sha256",
    "SHA-512-256": "sha512_256",
}

#: The hexadecimal length of each algorithm's digests.
DIGEST_LENGTHS: Final = {"MD5": 32, "SHA-256": 64, "SHA-512-256": 64}

#: The one quality of protection offered and accepted (RFC 8760 section 2.6
#: makes ``qop`` mandatory; ``auth-int`` is not offered).
QOP: Final = "auth"


class DigestError(ValueError):
    """An Authorization header that is not a well-formed digest response.

    Attributes:
        reason: what is wrong, fit for a 400's reason phrase.
    """

    def __init__(self, reason: str) -> None:
        """Say what is wrong."""
        super().__init__(reason)
        self.reason = reason


# -- hashes ------------------------------------------------------------------


def canonicalAlgorithm(name: str) -> str | None:
    """The name of a known algorithm as `ALGORITHMS` spells it, or ``None``.

    The ``algorithm`` parameter's value is a token compared without regard
    to case.
    """
    upper = name.upper()
    return upper if upper in ALGORITHMS else None


def _sha512t256(data: bytes) -> Any:
    return hashlib.new("sha512_256", data)


#: Each algorithm's hash function: the named constructors, which cost less
#: than ``hashlib.new`` looking the name up at every call.
_HASHES: Final[dict[str, Callable[[bytes], Any]]] = {
    "MD5": hashlib.md5,
    "SHA-256": hashlib.sha256,
    "SHA-512-256": _sha512t256,
}

#: Each algorithm's hash function, from bytes to a hashlib object, for a
#: caller that hashes bytes it made itself.
HASH_FUNCTIONS: Final = _HASHES


def digestHash(algorithm: str, text: str) -> str:
    """``H(text)`` of an algorithm, in lower-case hexadecimal (RFC 7616 3.4.1).

    Text is hashed as UTF-8; bytes that were not UTF-8 on the wire
    (surrogate escapes) are hashed as they came.
    """
    data = text.encode("utf-8", "surrogateescape")
    return str(_HASHES[algorithm](data).hexdigest())


def computeHA1(algorithm: str, username: str, realm: str, password: str) -> str:
    """``A1``'s hash, ``H(username:realm:password)``, as OpenSIPS stores it."""
    return digestHash(algorithm, f"{username}:{realm}:{password}")


#: The `Credentials` attribute holding each algorithm's HA1.
_HA1_FIELDS: Final = {
    "MD5": "ha1",
    "SHA-256": "ha1Sha256",
    "SHA-512-256": "ha1Sha512t256",
}


#: `_HA1_FIELDS`, for the authenticator's inline `storedHA1`.
HA1_FIELDS: Final = _HA1_FIELDS


def storedHA1(credentials: Credentials, algorithm: str, realm: str) -> str | None:
    """The HA1 to check a response of ``algorithm`` with, or ``None``.

    The hash kept for the algorithm when there is one; otherwise the one
    computed from the clear password, if that is kept.
    """
    stored: str = getattr(credentials, _HA1_FIELDS[algorithm])
    if stored:
        return stored.lower()
    if credentials.password:
        return computeHA1(algorithm, credentials.username, realm, credentials.password)
    return None


def digestResponse(
    algorithm: str,
    ha1: str,
    nonce: str,
    method: str,
    uri: str,
    nc: str,
    cnonce: str,
    qop: str = QOP,
) -> str:
    """The ``response`` a client with this HA1 sends (RFC 7616 section 3.4.1).

    ``KD(H(A1), nonce ":" nc ":" cnonce ":" qop ":" H(A2))`` with
    ``A2 = method ":" uri``, for ``qop=auth``.
    """
    ha2 = digestHash(algorithm, f"{method}:{uri}")
    return responseOfHA2(algorithm, ha1, nonce, nc, cnonce, ha2, qop)


def responseOfHA2(
    algorithm: str,
    ha1: str,
    nonce: str,
    nc: str,
    cnonce: str,
    ha2: str,
    qop: str = QOP,
) -> str:
    """`digestResponse` from ``H(A2)``, for a caller that keeps it."""
    return digestHash(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# -- headers -----------------------------------------------------------------

_TOKEN: Final = r"[A-Za-z0-9\-.!%*_+`'~]+"
_QUOTED: Final = r'"(?:[^"\\]|\\.)*"'
_SCHEME_RE: Final = re.compile(r"[ \t]*(" + _TOKEN + r")(?:[ \t]+|$)")
# A value is a quoted string or, leniently, any run of characters that are
# neither white space, a comma nor a quote.
_PARAM_RE: Final = re.compile(
    r"[ \t]*(" + _TOKEN + r")[ \t]*=[ \t]*(" + _QUOTED + r'|[^\s,"]+)[ \t]*(?:,|$)',
    re.DOTALL,
)
_NC_RE: Final = re.compile(r"[0-9A-Fa-f]{8}")


#: One ``name=value`` pair of the fast path, and the comma after it:
#: `parseAuthParamsFully`'s pair, narrowed to printable ASCII without
#: backslashes, spaces for white space, and lower-case names.
_PLAIN_PAIR_RE: Final = re.compile(
    r" *([a-z0-9\-.!%*_+`'~]+) *= *"
    r'("[ !#-\[\]-~]*"|[!#-+\--\[\]-~]+)'
    r" *(?:,|$)"
)


def parseAuthParams(value: str) -> tuple[str, dict[str, str]]:
    """Split a credentials or challenge value into its scheme and parameters.

    ``Digest username="bob", nc=00000001`` gives ``("digest", {"username":
    "bob", "nc": "00000001"})``: the scheme and the names lower case, quoted
    values unquoted.

    The shape every client sends (``Digest``, then ``name=value`` pairs,
    quoted values without backslashes or commas) is read by
    `parsePlainDigest`; anything else by the whole grammar,
    `parseAuthParamsFully`. Both give the same answer wherever the first
    gives one.

    Raises:
        DigestError: not a scheme followed by ``name=value`` pairs separated
            by commas, or a name given twice.
    """
    params = parsePlainDigest(value)
    if params is not None:
        return "digest", params
    return parseAuthParamsFully(value)


def parsePlainDigest(value: str) -> dict[str, str] | None:
    """The parameters of a Digest value of the common shape; ``None`` otherwise.

    The common shape is ``Digest`` and a space, then ``name=value`` pairs
    separated by commas, in printable ASCII without backslashes (spaces but
    no tabs), the names in lower case (as every client writes them) and none
    given twice. Whatever is not of this shape, well-formed or not, gives
    ``None`` and is left to `parseAuthParamsFully`: this never raises, and
    gives what `parseAuthParamsFully` gives wherever it answers. It is cheap
    because it is a few calls into C, whatever the number of parameters: one
    regular expression splits the whole value into names and values, and
    the values are unquoted all at once.
    """
    if value[:7].lower() != "digest ":
        return None
    # [between, name, value, between, name, value, ..., after]: the pairs
    # follow each other from the start to the end when all the betweens and
    # what is after are empty; a character outside the narrowed classes
    # leaves one that is not.
    parts = _PLAIN_PAIR_RE.split(value[7:])
    if len(parts) == 1 or any(parts[::3]):
        return None
    names = parts[1::3]
    # No value holds a line feed, nor a quote but around a quoted value: all
    # are unquoted at once.
    values = "\n".join(parts[2::3]).replace('"', "").split("\n")
    params = dict(zip(names, values, strict=True))
    if len(params) != len(names):
        return None  # a name given twice
    return params


def parseAuthParamsFully(value: str) -> tuple[str, dict[str, str]]:
    """`parseAuthParams` by the whole grammar (RFC 3261 section 25.1, RFC 7616).

    Any scheme, white space before it, quoted values with backslash escapes
    and commas, a comma at the end.

    Raises:
        DigestError: see `parseAuthParams`.
    """
    match = _SCHEME_RE.match(value)
    if match is None:
        raise DigestError("malformed authentication scheme")
    scheme = match.group(1).lower()
    params: dict[str, str] = {}
    pos, end = match.end(), len(value.rstrip(" \t"))
    while pos < end:
        param = _PARAM_RE.match(value, pos)
        if param is None or param.end() <= pos:
            raise DigestError("malformed authentication parameters")
        name = param.group(1).lower()
        if name in params:
            raise DigestError(f"parameter {name} given twice")
        params[name] = unquote(param.group(2))
        pos = param.end()
    return scheme, params


class DigestCredentials(NamedTuple):
    """A digest response, from an Authorization header (RFC 7616 section 3.4).

    A named tuple rather than a frozen dataclass: one is made for every
    request authenticated, and a tuple is made in a fifth of the time.

    Attributes:
        username: the user.
        realm: the realm the response is for.
        nonce: the server's nonce it answers.
        uri: the Request-URI, as the client saw it.
        response: the response digest, lower case.
        algorithm: the algorithm, as `ALGORITHMS` spells it; ``None`` when
            the client named one this server does not know.
        nc: the nonce count, eight hexadecimal digits.
        cnonce: the client's nonce.
        qop: the quality of protection, ``auth``.
    """

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str | None
    nc: str
    cnonce: str
    qop: str = QOP

    @property
    def nonceCount(self) -> int:
        """The nonce count as a number."""
        return int(self.nc, 16)


def parseCredentials(value: str) -> DigestCredentials | None:
    """Read an Authorization header value; ``None`` for a scheme other than Digest.

    Raises:
        DigestError: a Digest response that is malformed or lacks what this
            server needs: ``username``, ``realm``, ``nonce``, ``uri``,
            ``response``, and ``qop=auth`` with ``nc`` and ``cnonce``.
    """
    params = parsePlainDigest(value)
    if params is None:
        scheme, params = parseAuthParamsFully(value)
        if scheme != "digest":
            return None
    if "username*" in params or params.get("userhash", "false").lower() != "false":
        raise DigestError("username* and userhash are not supported")
    try:
        username = params["username"]
        realm = params["realm"]
        nonce = params["nonce"]
        uri = params["uri"]
        response = params["response"]
    except KeyError as e:
        raise DigestError(f"digest response without {e.args[0]}") from None
    qop = params.get("qop")
    if qop is None:
        raise DigestError('digest response without qop: qop="auth" is required')
    if qop != QOP and qop.lower() != QOP:
        raise DigestError(f"qop {qop!r} was not offered")
    nc = params.get("nc", "")
    if _NC_RE.fullmatch(nc) is None:
        raise DigestError("nc must be eight hexadecimal digits")
    cnonce = params.get("cnonce", "")
    if not cnonce:
        raise DigestError("digest response without cnonce")
    algorithm = params.get("algorithm", "MD5")
    # tuple.__new__ rather than the class: the named tuple's own __new__ is
    # a Python function, which costs more than the rest of this together.
    return _newCredentials(
        DigestCredentials,
        (
            username,
            realm,
            nonce,
            uri,
            response.lower(),
            algorithm if algorithm in ALGORITHMS else canonicalAlgorithm(algorithm),
            nc,
            cnonce,
            QOP,
        ),
    )


_newCredentials: Final[Callable[..., DigestCredentials]] = tuple.__new__


def challenge(realm: str, nonce: str, algorithm: str, stale: bool = False) -> str:
    """A WWW-Authenticate value: one Digest challenge (RFC 7616 section 3.3)."""
    value = (
        f"Digest realm={quote(realm)}, nonce={quote(nonce)},"
        f" algorithm={algorithm}, qop={quote(QOP)}"
    )
    return value + ", stale=true" if stale else value


def parseChallenge(value: str) -> dict[str, str]:
    """The parameters of a Digest challenge (the client's side).

    Raises:
        DigestError: not a Digest challenge.
    """
    scheme, params = parseAuthParams(value)
    if scheme != "digest":
        raise DigestError("not a Digest challenge")
    return params


def answerChallenge(
    value: str,
    username: str,
    password: str,
    method: str,
    uri: str,
    nc: int = 1,
    cnonce: str | None = None,
) -> str:
    """The Authorization value answering a challenge (the client's side).

    Args:
        value: the WWW-Authenticate value.
        username: the user.
        password: the user's password.
        method: the method of the request the answer goes in.
        uri: its Request-URI.
        nc: the nonce count.
        cnonce: the client nonce; random when not given.

    Returns:
        ``Digest username=..., response=...``.
    """
    params = parseChallenge(value)
    algorithm = canonicalAlgorithm(params.get("algorithm", "MD5")) or "MD5"
    realm, nonce = params["realm"], params["nonce"]
    cnonce = cnonce or secrets.token_hex(8)
    count = f"{nc:08x}"
    ha1 = computeHA1(algorithm, username, realm, password)
    response = digestResponse(algorithm, ha1, nonce, method, uri, count, cnonce)
    return (
        f"Digest username={quote(username)}, realm={quote(realm)},"
        f" nonce={quote(nonce)}, uri={quote(uri)}, response={quote(response)},"
        f" algorithm={algorithm}, qop={QOP}, nc={count}, cnonce={quote(cnonce)}"
    )


# -- nonces ------------------------------------------------------------------


class NonceState(Enum):
    """What a nonce is found to be."""

    #: Signed by this secret, for this realm, and not expired.
    VALID = "valid"
    #: Genuine but a lifetime old or more (or issued that far ahead): the
    #: client's credentials may be right; it should retry with a new nonce.
    STALE = "stale"
    #: Not a nonce this secret signed for this realm.
    FORGED = "forged"


# The members as module constants: reading an Enum member through its
# class goes through the class's __getattr__ machinery, and costs a few
# tenths of a microsecond each time, on a path that reads one per request.
_VALID: Final = NonceState.VALID
_STALE: Final = NonceState.STALE
_FORGED: Final = NonceState.FORGED


#: Bytes of a nonce: issue time (8), salt (8), truncated HMAC-SHA-256 (16).
_NONCE_BYTES: Final = 32
#: Characters of a nonce: the bytes in unpadded base64url.
_NONCE_LENGTH: Final = 43


class Nonces:
    """Issues nonces and verifies them without needing to keep them.

    A nonce is ``base64url(time || salt || HMAC-SHA-256(secret, time || salt
    || realm)[:16])``, the time the whole seconds of the injected clock.
    RFC 7616 section 3.3 suggests a time stamp and a keyed hash; the random
    salt makes every challenge's nonce different, so that two clients
    challenged in the same second do not share a nonce count.

    A client reuses its nonce for request after request (with a growing
    nonce count), so the nonces issued here, and those of another server
    whose HMAC was found right, are remembered with their realm and issue
    time, at most `cacheLimit` of them, the oldest forgotten first and those
    past their lifetime as they come to the front: a nonce met again costs a
    dictionary look-up instead of a decoding and an HMAC. Only genuine
    nonces are kept (a forged one is checked again every time), and the age
    is worked out afresh at every check, so a remembered nonce becomes stale
    exactly when it would have without the memory. When
    more nonces are issued than are remembered (more than `cacheLimit` in a
    lifetime), the oldest are forgotten and cost their HMAC again.

    Attributes:
        lifetime: seconds a nonce is valid.
        cacheLimit: how many genuine nonces are remembered at most.
    """

    def __init__(
        self,
        secret: bytes,
        clock: IReactorTime,
        lifetime: float,
        cacheLimit: int = 10_000,
    ) -> None:
        """Sign with ``secret``; nonces live ``lifetime`` seconds of ``clock``."""
        self._secret = secret
        self.clock = clock
        self.lifetime = lifetime
        self.cacheLimit = cacheLimit
        # (nonce, realm) -> issue time, of nonces issued or whose HMAC was
        # right, in the order they were so. An OrderedDict: a dict whose
        # oldest entries are deleted again and again costs ever more to find
        # its first live entry (next(iter(d)) walks over the deleted ones
        # until the dict is resized).
        self._genuine: OrderedDict[tuple[str, str], float] = OrderedDict()

    def _sign(self, body: bytes, realm: str) -> bytes:
        key = realm.encode("utf-8", "surrogateescape")
        return hmac.digest(self._secret, body + key, "sha256")[:16]

    def issue(self, realm: str) -> str:
        """A new nonce for ``realm``."""
        issued = int(self.clock.seconds())
        body = struct.pack(">Q", issued) + secrets.token_bytes(8)
        raw = body + self._sign(body, realm)
        nonce = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
        self._remember((nonce, realm), float(issued))
        return nonce

    def check(
        self, nonce: str, realm: str, now: float | None = None
    ) -> tuple[NonceState, float]:
        """Whether ``nonce`` was issued for ``realm`` and is still valid.

        ``now`` is the clock's time when the caller has just read it.

        Returns:
            The state, and the time the nonce was issued (0 when forged).
        """
        key = (nonce, realm)
        issued = self._genuine.get(key)
        if issued is None:
            issued = self._verify(nonce, realm)
            if issued is None:
                return _FORGED, 0.0
            self._remember(key, issued)
        age = (self.clock.seconds() if now is None else now) - issued
        if age >= self.lifetime or -age >= self.lifetime:
            return _STALE, issued
        return _VALID, issued

    def _verify(self, nonce: str, realm: str) -> float | None:
        """The issue time of a nonce signed for ``realm``; ``None`` if forged."""
        if len(nonce) != _NONCE_LENGTH or not nonce.isascii():
            return None
        try:
            raw = base64.b64decode(nonce + "=", altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            return None
        if len(raw) != _NONCE_BYTES:
            return None
        body, mac = raw[:16], raw[16:]
        if not hmac.compare_digest(mac, self._sign(body, realm)):
            return None
        (issued,) = struct.unpack(">Q", body[:8])
        return float(issued)

    def _remember(self, key: tuple[str, str], issued: float) -> None:
        """Keep a genuine nonce, forgetting the oldest kept and the expired."""
        genuine = self._genuine
        now = self.clock.seconds()
        while genuine:
            oldest = next(iter(genuine))
            if len(genuine) < self.cacheLimit and (
                abs(now - genuine[oldest]) < self.lifetime
            ):
                break
            del genuine[oldest]
        if abs(now - issued) < self.lifetime:
            genuine[key] = issued

    def __len__(self) -> int:
        """How many genuine nonces are remembered."""
        return len(self._genuine)


class NonceCounts:
    """The highest nonce count accepted for each nonce in use (replay detection).

    RFC 7616 section 3.4: "The purpose of this parameter is to allow the
    server to detect request replays by maintaining its own copy of this
    count -- if the same nc value is seen twice, then the request is a
    replay." A count must grow with every request that uses a nonce.

    An entry lives as long as its nonce (issue time plus lifetime), and at
    most `limit` entries are kept. When the limit forces out an entry that
    is still alive, the time its nonce was issued becomes a floor: a nonce
    issued at or before the floor that has no entry might have had one, so
    it is refused as a replay (the client is asked to take a new nonce),
    never accepted twice.

    Attributes:
        lifetime: seconds a nonce lives.
        limit: how many nonces are remembered at most.
        floor: nonces issued at or before this time without an entry are
            refused.
    """

    def __init__(
        self, clock: IReactorTime, lifetime: float, limit: int = 65_536
    ) -> None:
        """Remember counts for ``lifetime`` seconds of ``clock``."""
        self.clock = clock
        self.lifetime = lifetime
        self.limit = limit
        self.floor = float("-inf")
        # nonce -> (expiry, highest count), oldest first use first; an
        # OrderedDict for the reason `Nonces` gives.
        self._counts: OrderedDict[str, tuple[float, int]] = OrderedDict()
        # When the first entry expires: nothing to forget before then.
        self._frontExpiry = float("inf")

    def __len__(self) -> int:
        """How many nonces are remembered."""
        return len(self._counts)

    def advance(
        self, nonce: str, issued: float, count: int, now: float | None = None
    ) -> bool:
        """Take ``count`` for ``nonce`` if it is above the last one.

        Args:
            nonce: a valid nonce.
            issued: when it was issued.
            count: the request's nonce count.
            now: the clock's time, when the caller has just read it.

        Returns:
            Whether the count is new (above every count seen for the nonce);
            ``False`` for a replay.
        """
        counts = self._counts
        if now is None:
            now = self.clock.seconds()
        if now >= self._frontExpiry:
            self._expire(now)
        known = counts.get(nonce)
        if known is not None:
            if count <= known[1]:
                return False
            counts[nonce] = (known[0], count)
            return True
        if issued <= self.floor:
            return False
        evicted = not counts
        while len(counts) >= self.limit:
            expiry, _ = counts.popitem(last=False)[1]
            if expiry > now:
                self.floor = max(self.floor, expiry - self.lifetime)
            evicted = True
        counts[nonce] = (issued + self.lifetime, count)
        if evicted:
            self._frontExpiry = next(iter(counts.values()))[0]
        return True

    def _expire(self, now: float) -> None:
        """Forget the oldest entries whose nonces have expired."""
        counts = self._counts
        while counts:
            expiry = next(iter(counts.values()))[0]
            if expiry > now:
                self._frontExpiry = expiry
                return
            counts.popitem(last=False)
        self._frontExpiry = float("inf")
