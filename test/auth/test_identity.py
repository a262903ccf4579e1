"""Tests for presence.auth.identity: identities, trusted peers, P-Asserted-Identity."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from presence.auth.identity import (
    ASSERTED,
    FROM,
    Identity,
    TrustedPeers,
    assertedIdentity,
    fromIdentity,
    requireIdentity,
)
from presence.sip.errors import BadRequest, Forbidden
from presence.sip.message import SIPURI, SIPRequest, parseURI
from presence.sip.parser import parseDatagram


def request(*headers: str, sender: str = "<sip:alice@example.com>") -> SIPRequest:
    """A SUBSCRIBE with extra header lines."""
    lines = [
        "SUBSCRIBE sip:bob@example.com SIP/2.0",
        "Via: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK-1",
        "Max-Forwards: 70",
        "To: <sip:bob@example.com>",
        f"From: {sender};tag=a",
        "Call-ID: c1",
        "CSeq: 1 SUBSCRIBE",
        *headers,
        "Content-Length: 0",
    ]
    message = parseDatagram(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, SIPRequest)
    return message


class IdentityTests(SynchronousTestCase):
    """What an identity names."""

    def test_aorAndURI(self) -> None:
        """The address of record is written as SIPURI.aor writes it."""
        uri = parseURI("sip:%61lice@EXAMPLE.com:5060;transport=tcp")
        assert isinstance(uri, SIPURI)
        identity = Identity.ofURI(uri, ASSERTED)
        assert identity is not None
        self.assertEqual(identity.aor, uri.aor())
        self.assertEqual(identity.aor, "alice@example.com")
        self.assertEqual(identity.uri, "sip:alice@example.com")

    def test_userEscapedInURI(self) -> None:
        """A user with characters a user part cannot hold is escaped in the URI."""
        self.assertEqual(
            Identity("a b@c", "example.com").uri, "sip:a%20b%40c@example.com"
        )

    def test_noUser(self) -> None:
        """A URI without a user names no identity."""
        self.assertIsNone(Identity.ofURI(SIPURI("example.com"), FROM))

    def test_requireIdentity(self) -> None:
        """Another address of record is refused with 403; no identity passes."""
        bob = Identity("bob", "example.com")
        requireIdentity(bob, "bob@example.com", "publish for")
        requireIdentity(None, "alice@example.com", "publish for")
        e = self.assertRaises(
            Forbidden, requireIdentity, bob, "alice@example.com", "publish for"
        )
        self.assertEqual(
            e.reason, "bob@example.com may not publish for alice@example.com"
        )


class AssertedIdentityTests(SynchronousTestCase):
    """P-Asserted-Identity, RFC 3325 section 9.1."""

    def test_sipURI(self) -> None:
        """The asserted SIP URI and its display name are the identity."""
        identity = assertedIdentity(
            request('P-Asserted-Identity: "Bob B." <sip:bob@Example.com>')
        )
        self.assertEqual(identity, Identity("bob", "example.com", ASSERTED, "Bob B."))

    def test_telFirst(self) -> None:
        """RFC 3325 9.1: a tel URI may come with the SIP URI; the SIP URI is used.

        "There may be one or two P-Asserted-Identity values. If there is one
        value, it MUST be a sip, sips, or tel URI. If there are two values,
        one value MUST be a sip or sips URI and the other MUST be a tel URI."
        """
        for headers in (
            ["P-Asserted-Identity: <tel:+15551234>, <sip:bob@example.com>"],
            [
                "P-Asserted-Identity: <tel:+15551234>",
                "P-Asserted-Identity: <sip:bob@example.com>",
            ],
        ):
            identity = assertedIdentity(request(*headers))
            assert identity is not None
            self.assertEqual(identity.aor, "bob@example.com")

    def test_none(self) -> None:
        """No header, or only a tel URI: nothing asserted."""
        self.assertIsNone(assertedIdentity(request()))
        self.assertIsNone(assertedIdentity(request("P-Asserted-Identity: <tel:+1555>")))

    def test_malformed(self) -> None:
        """A malformed header is the request's fault: 400."""
        for value in ("<sip:bob@example.com", "", '"open <sip:x@y>'):
            self.assertRaises(
                BadRequest, assertedIdentity, request(f"P-Asserted-Identity: {value}")
            )

    def test_from(self) -> None:
        """The From names the identity of a trusted peer that asserts none."""
        self.assertEqual(
            fromIdentity(request(sender='"Al" <sip:alice@example.com>')),
            Identity("alice", "example.com", FROM, "Al"),
        )
        self.assertIsNone(fromIdentity(request(sender="<tel:+1555>")))


class TrustedPeersTests(SynchronousTestCase):
    """trusted_peers: addresses and networks."""

    def test_membership(self) -> None:
        """Addresses and networks, IPv4 and IPv6, IPv4 reached over IPv6."""
        trusted = TrustedPeers(["10.0.0.0/8", "127.0.0.1", "2001:db8::/32"])
        for host in (
            "10.1.2.3",
            "127.0.0.1",
            "2001:db8::5",
            "::ffff:10.0.0.1",
            "[2001:db8::1]",
        ):
            self.assertIn(host, trusted)
        for host in ("127.0.0.2", "192.0.2.1", "2001:db9::1", "::1", "example.com", ""):
            self.assertNotIn(host, trusted)

    def test_empty(self) -> None:
        """No trusted peer: nobody is trusted."""
        self.assertFalse(TrustedPeers())
        self.assertNotIn("127.0.0.1", TrustedPeers())

    def test_invalid(self) -> None:
        """Something that is neither an address nor a network is refused."""
        self.assertRaises(ValueError, TrustedPeers, ["10.0.0.0/33"])
