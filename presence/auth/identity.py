"""The identity a request is known to come from, and the peers trusted to say it.

An `Identity` is what the request checks learned about the sender: the user
who answered a digest challenge, or the P-Asserted-Identity (RFC 3325) of a
trusted peer, or, for a trusted peer that asserts none, its From. The
handlers act on it rather than on what From claims: a PUBLISH or REGISTER
for another address of record is refused (`requireIdentity`), and a
SUBSCRIBE's watcher is the identity.

`TrustedPeers` holds the addresses and networks of ``trusted_peers``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

from presence.sip.errors import BadRequest, Forbidden, SIPParseError
from presence.sip.grammar import splitList, unescape
from presence.sip.message import SIPURI, SIPRequest, parseNameAddr

#: How an identity was established: a digest response was verified.
DIGEST: Final = "digest"
#: A trusted peer's P-Asserted-Identity.
ASSERTED: Final = "asserted"
#: A trusted peer's From, in the absence of a P-Asserted-Identity.
FROM: Final = "from"

#: The characters of a user part that need no escape (RFC 3261 section 25.1:
#: unreserved and user-unreserved).
_USER_SAFE: Final = "-_.!~*'()&=+$,;?/"


@dataclass(frozen=True)
class Identity:
    """The user a request comes from, as the request checks established it.

    Attributes:
        user: the user part, unescaped (RFC 3261 section 19.1.4).
        domain: the domain, lower case.
        how: `DIGEST`, `ASSERTED` or `FROM`.
        displayName: the display name the asserting peer gave, or ``None``.
    """

    user: str
    domain: str
    how: str = DIGEST
    displayName: str | None = None

    @property
    def aor(self) -> str:
        """The address of record, ``user@domain``, as `SIPURI.aor` writes it."""
        return f"{self.user}@{self.domain}"

    @property
    def uri(self) -> str:
        """The identity as a SIP URI, ``sip:user@domain``."""
        return f"sip:{quote(self.user, safe=_USER_SAFE)}@{self.domain}"

    @classmethod
    def ofURI(
        cls, uri: SIPURI, how: str, displayName: str | None = None
    ) -> Identity | None:
        """The identity a SIP URI names, or ``None`` if it names no user."""
        if not uri.user:
            return None
        return cls(unescape(uri.user), uri.host.lower(), how, displayName)


def requireIdentity(identity: Identity | None, aor: str, what: str) -> None:
    """Refuse a request for another address of record than its sender's.

    Args:
        identity: who sent the request; ``None`` (nobody checked) passes.
        aor: the address of record the request acts on, as `SIPURI.aor`
            writes it.
        what: what the request does, for the reason phrase.

    Raises:
        Forbidden: the identity is another address of record.
    """
    if identity is not None and identity.aor != aor:
        raise Forbidden(f"{identity.aor} may not {what} {aor}")


def assertedIdentity(request: SIPRequest) -> Identity | None:
    """The first SIP or SIPS URI of the request's P-Asserted-Identity.

    RFC 3325 section 9.1 allows one or two values (a SIP or SIPS URI and a
    tel URI); a tel URI names no user of a domain and is passed over.

    Returns:
        The identity, or ``None`` when the request asserts none.

    Raises:
        BadRequest: the header is malformed.
    """
    lines = request.headerLines("p-asserted-identity")
    try:
        for line in lines:
            for value in splitList(line):
                address = parseNameAddr(value)
                if isinstance(address.uri, SIPURI):
                    return Identity.ofURI(address.uri, ASSERTED, address.displayName)
    except SIPParseError as e:
        raise BadRequest(f"malformed P-Asserted-Identity: {e.reason}") from None
    return None


def fromIdentity(request: SIPRequest) -> Identity | None:
    """The identity the From names, for a trusted peer that asserts none."""
    address = request.fromAddr
    if not isinstance(address.uri, SIPURI):
        return None
    return Identity.ofURI(address.uri, FROM, address.displayName)


class TrustedPeers:
    """The addresses and networks whose requests are believed (``trusted_peers``).

    An IPv4 peer reached over IPv6 (``::ffff:10.0.0.1``) is the IPv4 address.
    """

    def __init__(self, networks: Iterable[str] = ()) -> None:
        """Trust ``networks``: addresses (``127.0.0.1``) or networks (``10.0.0.0/8``).

        Raises:
            ValueError: one is neither.
        """
        self.networks = [ipaddress.ip_network(n, strict=False) for n in networks]

    def __bool__(self) -> bool:
        """Whether any peer is trusted."""
        return bool(self.networks)

    def __contains__(self, host: object) -> bool:
        """Whether a peer's address (a string) is trusted."""
        if not self.networks or not isinstance(host, str):
            return False
        try:
            address = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(
            address.version == network.version and address in network
            for network in self.networks
        )
