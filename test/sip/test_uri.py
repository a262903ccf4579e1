"""Tests for `presence.sip.uri`: SIP URIs, their comparison, name-addrs."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from presence.sip.errors import SIPParseError
from presence.sip.grammar import unescape
from presence.sip.uri import SIPURI, URI, parseNameAddr, parseURI


class URITests(SynchronousTestCase):
    """SIP and SIPS URIs (RFC 3261 19.1)."""

    def test_full(self) -> None:
        """Every part of a SIP URI is parsed."""
        uri = parseURI("sips:alice:secret@Example.COM:5061;transport=tcp;lr?subject=x")
        assert isinstance(uri, SIPURI)
        self.assertEqual(uri.scheme, "sips")
        self.assertEqual(uri.user, "alice")
        self.assertEqual(uri.password, "secret")
        self.assertEqual(uri.host, "Example.COM")
        self.assertEqual(uri.port, 5061)
        self.assertEqual(uri.params, {"transport": "tcp", "lr": None})
        self.assertEqual(uri.transport, "TCP")
        self.assertEqual(uri.headers, "subject=x")
        self.assertEqual(uri.hostport, "Example.COM:5061")
        self.assertEqual(
            str(uri), "sips:alice:secret@Example.COM:5061;transport=tcp;lr?subject=x"
        )

    def test_hosts(self) -> None:
        """Host names, IPv4 addresses and IPv6 references parse."""
        for host in ("example.com", "192.0.2.1", "[2001:db8::1]", "[::ffff:1.2.3.4]"):
            uri = parseURI(f"sip:u@{host}:5060")
            assert isinstance(uri, SIPURI)
            self.assertEqual((uri.host, uri.port), (host, 5060))

    def test_noUser(self) -> None:
        """A URI without a user part has none."""
        uri = parseURI("sip:example.com")
        assert isinstance(uri, SIPURI)
        self.assertIsNone(uri.user)
        self.assertEqual(uri.aor(), "example.com")

    def test_schemeCase(self) -> None:
        """The scheme is case-insensitive (RFC 3261 19.1.4)."""
        self.assertEqual(parseURI("SIP:a@b"), parseURI("sip:a@b"))

    def test_escapedUser(self) -> None:
        """Escaped user parts are kept as written and unescaped in the AOR."""
        uri = parseURI("sip:%61lice%40home@example.com")
        assert isinstance(uri, SIPURI)
        self.assertEqual(uri.user, "%61lice%40home")
        self.assertEqual(uri.aor(), "alice@home@example.com")
        self.assertEqual(str(uri), "sip:%61lice%40home@example.com")

    def test_userWithSpecials(self) -> None:
        """A telephone-subscriber user part may hold ; and = (RFC 3261 19.1.1)."""
        uri = parseURI("sip:+1-212-555-1212;phone-context=x@gw.example.com;user=phone")
        assert isinstance(uri, SIPURI)
        self.assertEqual(uri.user, "+1-212-555-1212;phone-context=x")
        self.assertEqual(uri.params, {"user": "phone"})

    def test_otherScheme(self) -> None:
        """Other schemes are kept as written."""
        uri = parseURI("tel:+1-201-555-0123")
        self.assertEqual(type(uri), URI)
        self.assertEqual(str(uri), "tel:+1-201-555-0123")

    def test_malformed(self) -> None:
        """Malformed URIs are errors."""
        for text in (
            "",
            "sip:",
            "alice@example.com",
            "sip:a@b:99999",
            "sip:a@b:",
            "sip:a@.b",
            "sip:a@b..c",
            "sip:a b@c",
            "sip:a@[xyz]",
            "sip:a@[1::2::3]",
            "sip:@b",
            "sip:a@b@c",
            "sip:a@b;=x",
            "tel:",
            "tel:a b",
        ):
            self.assertRaises(SIPParseError, parseURI, text)

    def test_badEscape(self) -> None:
        """A % that is not followed by two hex digits is not decoded."""
        self.assertEqual(unescape("%+f%4"), "%+f%4")
        self.assertEqual(unescape("%41%e2%82%ac"), "A\u20ac")

    def test_repeatedParameter(self) -> None:
        """A URI parameter may appear only once (RFC 3261 19.1.1)."""
        self.assertRaises(SIPParseError, parseURI, "sip:a@b;lr;lr")


class CacheTests(SynchronousTestCase):
    """Values parsed once and reused across messages stay private to each."""

    def test_uriCopies(self) -> None:
        """Changing a parsed URI leaves later parses of the same text alone."""
        first = parseURI("sip:alice@example.com;transport=tcp")
        assert isinstance(first, SIPURI)
        first.params["transport"] = "udp"
        first.host = "changed"
        second = parseURI("sip:alice@example.com;transport=tcp")
        assert isinstance(second, SIPURI)
        self.assertEqual(second.params, {"transport": "tcp"})
        self.assertEqual(second.host, "example.com")

    def test_nameAddrCopies(self) -> None:
        """Changing a parsed name-addr leaves later parses alone."""
        text = '"Bob" <sip:bob@example.com;lr>;expires=60'
        first = parseNameAddr(text)
        first.params["expires"] = "0"
        assert isinstance(first.uri, SIPURI)
        first.uri.params.clear()
        again = parseNameAddr(text)
        self.assertEqual(again.params, {"expires": "60"})
        assert isinstance(again.uri, SIPURI)
        self.assertEqual(again.uri.params, {"lr": None})
        self.assertEqual(again.displayName, "Bob")

    def test_knownPrefixWithBadParams(self) -> None:
        """A known name-addr followed by junk is still an error."""
        parseNameAddr("<sip:a@example.com>")
        self.assertRaises(SIPParseError, parseNameAddr, "<sip:a@example.com> junk")
        self.assertRaises(SIPParseError, parseNameAddr, "<sip:a@example.com>;=1")
        self.assertEqual(parseNameAddr("<sip:a@example.com> ;tag=1").tag, "1")


class URIComparisonTests(SynchronousTestCase):
    """URI equality as RFC 3261 19.1.4 defines it."""

    EQUAL = (
        (
            "sip:%61lice@atlanta.com;transport=TCP",
            "sip:alice@AtLanTa.CoM;Transport=tcp",
        ),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
        (
            "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
            "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
        ),
        (
            "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
            "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
        ),
    )
    UNEQUAL = (
        ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
        ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
        ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),
        ("sip:a@b", "sips:a@b"),
        ("sip:a:x@b", "sip:a:y@b"),
    )

    def test_equal(self) -> None:
        """The equal examples of RFC 3261 19.1.4 compare and hash equal."""
        for a, b in self.EQUAL:
            ua, ub = parseURI(a), parseURI(b)
            self.assertEqual(ua, ub, (a, b))
            self.assertEqual(ub, ua, (b, a))
            self.assertEqual(hash(ua), hash(ub), (a, b))

    def test_unequal(self) -> None:
        """The unequal examples of RFC 3261 19.1.4 compare unequal."""
        for a, b in self.UNEQUAL:
            self.assertNotEqual(parseURI(a), parseURI(b), (a, b))
            self.assertNotEqual(parseURI(b), parseURI(a), (b, a))

    def test_otherSchemes(self) -> None:
        """A SIP URI never equals a URI of another scheme."""
        self.assertNotEqual(parseURI("sip:a@b"), parseURI("tel:+1"))
        self.assertEqual(parseURI("tel:+1"), parseURI("TEL:+1"))


class NameAddrTests(SynchronousTestCase):
    """name-addr and addr-spec with header parameters (RFC 3261 20.10)."""

    def test_quotedDisplayName(self) -> None:
        """A quoted display name is unquoted."""
        a = parseNameAddr('"Alice Smith" <sip:alice@example.com>;tag=x')
        self.assertEqual(a.displayName, "Alice Smith")
        self.assertEqual(a.uri, parseURI("sip:alice@example.com"))
        self.assertEqual(a.tag, "x")

    def test_escapedDisplayName(self) -> None:
        """A quoted display name may hold escaped quotes (RFC 3261 25.1)."""
        a = parseNameAddr(r'"A \"B\" C" <sip:x@y>')
        self.assertEqual(a.displayName, 'A "B" C')
        self.assertEqual(parseNameAddr(str(a)), a)

    def test_tokenDisplayName(self) -> None:
        """An unquoted display name is a sequence of tokens."""
        a = parseNameAddr("Bob  Smith<sip:bob@example.com>")
        self.assertEqual(a.displayName, "Bob  Smith")
        self.assertEqual(parseNameAddr("<sip:b@x>").displayName, None)
        self.assertEqual(parseNameAddr('"" <sip:b@x>').displayName, "")

    def test_utf8DisplayName(self) -> None:
        """A quoted display name may hold UTF-8 text."""
        a = parseNameAddr('"J\u00fcrgen" <sip:j@x>')
        self.assertEqual(a.displayName, "J\u00fcrgen")

    def test_nameAddrParamsBelongToURI(self) -> None:
        """Inside angle brackets the parameters are the URI's."""
        a = parseNameAddr("<sip:alice@example.com;transport=tcp>;tag=1")
        assert isinstance(a.uri, SIPURI)
        self.assertEqual(a.uri.params, {"transport": "tcp"})
        self.assertEqual(a.params, {"tag": "1"})

    def test_addrSpecParamsBelongToHeader(self) -> None:
        """After an addr-spec the parameters are the header's (RFC 3261 20.10)."""
        a = parseNameAddr("sip:alice@example.com;tag=1;transport=tcp")
        assert isinstance(a.uri, SIPURI)
        self.assertEqual(a.uri.params, {})
        self.assertEqual(a.params, {"tag": "1", "transport": "tcp"})
        self.assertIsNone(a.displayName)

    def test_strAlwaysAngled(self) -> None:
        """Writing a name-addr keeps the URI's own parameters inside brackets."""
        a = parseNameAddr("sip:alice@example.com;tag=1")
        self.assertEqual(str(a), "<sip:alice@example.com>;tag=1")
        b = parseNameAddr("Bob <sip:bob@x;lr>;expires=60")
        self.assertEqual(str(b), "Bob <sip:bob@x;lr>;expires=60")
        self.assertEqual(parseNameAddr(str(b)), b)

    def test_withParams(self) -> None:
        """Adding parameters returns a copy and leaves the original alone."""
        a = parseNameAddr("<sip:a@b>")
        b = a.withParams(tag="t")
        self.assertEqual((a.tag, b.tag), (None, "t"))

    def test_malformed(self) -> None:
        """Malformed addresses are errors."""
        for text in (
            "",
            "   ",
            "<sip:a@b",
            '"unterminated <sip:a@b>',
            "<sip:a@b> junk",
            "sip:a@b junk",
            "Bob sip:a@b",
            "sip:a@b?x=y",
            "<>",
        ):
            self.assertRaises(SIPParseError, parseNameAddr, text)

    def test_repeatedParameter(self) -> None:
        """A header parameter may appear only once (RFC 3261 7.3.1)."""
        self.assertRaises(SIPParseError, parseNameAddr, "<sip:a@b>;tag=1;tag=2")
