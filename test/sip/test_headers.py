"""Tests for `presence.sip.headers`: header names, Via, CSeq, Event, media types."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from presence.sip.errors import SIPParseError
from presence.sip.headers import (
    CSeq,
    TokenParams,
    Via,
    canonicalName,
    parseCSeq,
    parseEvent,
    parseMediaType,
    parseVia,
    salvageVia,
)


class NamesTests(SynchronousTestCase):
    """Header names: wire spelling."""

    def test_canonicalName(self) -> None:
        """Names are written in their usual spelling."""
        self.assertEqual(canonicalName("call-id"), "Call-ID")
        self.assertEqual(canonicalName("cseq"), "CSeq")
        self.assertEqual(canonicalName("sip-if-match"), "SIP-If-Match")
        self.assertEqual(canonicalName("max-forwards"), "Max-Forwards")
        self.assertEqual(canonicalName("www-authenticate"), "WWW-Authenticate")


class ViaTests(SynchronousTestCase):
    """Via values (RFC 3261 20.42, RFC 3581)."""

    def test_parts(self) -> None:
        """Protocol, transport, sent-by and parameters are parsed."""
        via = parseVia(
            "SIP / 2.0 / udp host.Example.com:5062 ;branch=z9hG4bK77;"
            "received=192.0.2.9;rport=5070;ttl=1"
        )
        self.assertEqual(via.protocol, "SIP/2.0")
        self.assertEqual(via.transport, "UDP")
        self.assertEqual(via.host, "host.Example.com")
        self.assertEqual(via.port, 5062)
        self.assertEqual(via.sentBy, ("host.example.com", 5062))
        self.assertEqual(via.branch, "z9hG4bK77")
        self.assertEqual(via.received, "192.0.2.9")
        self.assertEqual(via.rport, 5070)

    def test_rportFlag(self) -> None:
        """An rport without a value asks for one (RFC 3581 4)."""
        via = parseVia("SIP/2.0/UDP 192.0.2.1;rport;branch=z9hG4bKx")
        self.assertIn("rport", via.params)
        self.assertIsNone(via.rport)

    def test_ipv6(self) -> None:
        """An IPv6 sent-by and received value parse."""
        via = parseVia("SIP/2.0/TCP [2001:db8::1]:5060;received=2001:db8::9")
        self.assertEqual(via.host, "[2001:db8::1]")
        self.assertEqual(via.received, "2001:db8::9")

    def test_roundTrip(self) -> None:
        """A written Via parses back equal."""
        via = Via("TLS", "example.com", 5061, {"branch": "z9hG4bKa", "rport": None})
        self.assertEqual(parseVia(str(via)), via)

    def test_malformed(self) -> None:
        """Malformed Vias are errors."""
        for text in (
            "",
            "SIP/2.0 host",
            "SIP/2.0/UDP",
            "SIP/2.0/UDP host:99999",
            "SIP/2.0/UDP host;branch=",
            "SIP/2.0/UDP host junk",
            "SIP/2.0/UDP host;branch=a b",
        ):
            self.assertRaises(SIPParseError, parseVia, text)


class SalvageTests(SynchronousTestCase):
    """What is read of a malformed top Via, so that a 400 can be routed."""

    def test_salvageVia(self) -> None:
        """RFC 4475 3.1.2.1: empty parameters are skipped, sent-by is kept."""
        via = salvageVia("SIP/2.0/UDP 192.0.2.15;;,;,,")
        assert via is not None
        self.assertEqual(
            (via.transport, via.host, via.port), ("UDP", "192.0.2.15", None)
        )
        via = salvageVia("SIP/2.0/UDP 192.0.2.15:5070;branch=z9hG4bK1;;rport")
        assert via is not None
        self.assertEqual((via.port, via.branch), (5070, "z9hG4bK1"))
        self.assertIsNone(salvageVia("garbage"))


class ScalarTests(SynchronousTestCase):
    """CSeq, Event and media type values."""

    def test_cseq(self) -> None:
        """A CSeq has a number and a case-sensitive method."""
        self.assertEqual(parseCSeq("4711 subscribe"), CSeq(4711, "subscribe"))

    def test_cseqLimit(self) -> None:
        """The CSeq number must be less than 2**31 (RFC 3261 8.1.1.5)."""
        self.assertEqual(parseCSeq(f"{2**31 - 1} A").number, 2**31 - 1)
        self.assertRaises(SIPParseError, parseCSeq, f"{2**31} A")
        self.assertRaises(SIPParseError, parseCSeq, "99999999999 A")

    def test_cseqMalformed(self) -> None:
        """A CSeq without a method or number is an error."""
        for text in ("1", "INVITE", "-1 INVITE", "1 INVITE x", "1,INVITE"):
            self.assertRaises(SIPParseError, parseCSeq, text)

    def test_event(self) -> None:
        """An event package is a token, perhaps with dots (RFC 6665 8.2.1)."""
        self.assertEqual(parseEvent("presence.winfo").value, "presence.winfo")
        self.assertRaises(SIPParseError, parseEvent, "pres ence")

    def test_mediaType(self) -> None:
        """Media types are lower-cased with their parameters."""
        t = parseMediaType("Application/PIDF+XML ; charset=UTF-8")
        self.assertEqual(t, TokenParams("application/pidf+xml", {"charset": "UTF-8"}))
        self.assertRaises(SIPParseError, parseMediaType, "text")
        self.assertRaises(SIPParseError, parseMediaType, "text/plain junk")
