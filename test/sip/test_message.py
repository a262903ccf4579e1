"""Tests for `presence.sip.message`: header grammar, URIs, addresses, Via."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from presence.sip.errors import SIPParseError
from presence.sip.message import (
    SIPURI,
    URI,
    CSeq,
    SIPRequest,
    SIPResponse,
    TokenParams,
    Via,
    canonicalName,
    parseCSeq,
    parseEvent,
    parseMediaType,
    parseNameAddr,
    parseParams,
    parseURI,
    parseVia,
    quote,
    responseTo,
    splitList,
    unescape,
    unquote,
)


def request(*headers: tuple[str, str], body: bytes = b"") -> SIPRequest:
    """Build a SUBSCRIBE with the given headers."""
    return SIPRequest("SUBSCRIBE", "sip:bob@example.com", headers, body)


BASIC: tuple[tuple[str, str], ...] = (
    ("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc;rport"),
    ("Via", "SIP/2.0/TCP proxy.example.com;branch=z9hG4bKdef"),
    ("From", '"Alice" <sip:alice@example.com>;tag=1234'),
    ("To", "<sip:bob@example.com>"),
    ("Call-ID", "abc@192.0.2.1"),
    ("CSeq", "7 SUBSCRIBE"),
    ("Max-Forwards", "70"),
)


HEADER_TEXT = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"),
    max_size=60,
)
GRAMMAR_TEXT = st.text(
    st.sampled_from(list('abcAZ09 \t;:=,@<>"\\.%[]?&+-*/_~!')), max_size=40
)


class NamesTests(SynchronousTestCase):
    """Header names: case, compact forms, wire spelling."""

    def test_compactFormsExpanded(self) -> None:
        """Each compact form names its full header (RFC 3261 7.3.3)."""
        expected = {
            "i": "call-id",
            "m": "contact",
            "e": "content-encoding",
            "l": "content-length",
            "c": "content-type",
            "f": "from",
            "s": "subject",
            "k": "supported",
            "t": "to",
            "v": "via",
            "o": "event",
            "u": "allow-events",
            "r": "refer-to",
            "b": "referred-by",
            "x": "session-expires",
            "y": "identity",
        }
        for short, full in expected.items():
            for written in (short, short.upper()):
                m = request((written, "value"))
                self.assertEqual(m.headers, [(full, "value")])
                self.assertEqual(m.header(full), "value")

    def test_caseInsensitiveLookup(self) -> None:
        """Header names compare case-insensitively (RFC 3261 7.3.1)."""
        m = request(("cAlL-iD", "x@y"))
        self.assertEqual(m.header("CALL-ID"), "x@y")
        self.assertEqual(m.header("call-id"), "x@y")
        self.assertTrue(m.hasHeader("Call-Id"))
        self.assertEqual(m.callId, "x@y")

    def test_orderKept(self) -> None:
        """Headers keep their order, including repeated names interleaved."""
        m = request(("Via", "a"), ("To", "b"), ("Via", "c"), ("X-Foo", "d"))
        self.assertEqual(
            m.headers, [("via", "a"), ("to", "b"), ("via", "c"), ("x-foo", "d")]
        )
        self.assertEqual(m.headerLines("via"), ["a", "c"])

    def test_canonicalName(self) -> None:
        """Names are written in their usual spelling."""
        self.assertEqual(canonicalName("call-id"), "Call-ID")
        self.assertEqual(canonicalName("cseq"), "CSeq")
        self.assertEqual(canonicalName("sip-if-match"), "SIP-If-Match")
        self.assertEqual(canonicalName("max-forwards"), "Max-Forwards")
        self.assertEqual(canonicalName("www-authenticate"), "WWW-Authenticate")


class SplitListTests(SynchronousTestCase):
    """Splitting comma-separated list headers (RFC 3261 7.3.1)."""

    def test_plain(self) -> None:
        """A list splits at commas, elements stripped."""
        self.assertEqual(splitList("a , b,c"), ["a", "b", "c"])

    def test_commaInQuotes(self) -> None:
        """A comma inside a quoted string does not split (RFC 3261 7.3.1)."""
        self.assertEqual(
            splitList('"Doe, John" <sip:j@x>, <sip:k@x>'),
            ['"Doe, John" <sip:j@x>', "<sip:k@x>"],
        )

    def test_commaInAngleBrackets(self) -> None:
        """A comma inside angle brackets does not split."""
        self.assertEqual(
            splitList("<sip:a@x;p=1,2>, <sip:b@x>"), ["<sip:a@x;p=1,2>", "<sip:b@x>"]
        )

    def test_escapedQuote(self) -> None:
        """An escaped quote does not end a quoted string."""
        self.assertEqual(
            splitList(r'"a\", b" <sip:a@x>, <sip:b@x>'),
            [r'"a\", b" <sip:a@x>', "<sip:b@x>"],
        )

    def test_angleInQuotes(self) -> None:
        """An angle bracket inside quotes does not open an address."""
        self.assertEqual(
            splitList('"<" <sip:a@x>, <sip:b@x>'), ['"<" <sip:a@x>', "<sip:b@x>"]
        )

    def test_emptyElement(self) -> None:
        """An empty element is an error."""
        self.assertRaises(SIPParseError, splitList, "a,,b")

    def test_unterminatedQuote(self) -> None:
        """An unterminated quoted string is an error."""
        self.assertRaises(SIPParseError, splitList, '"a, b')

    def test_headerValuesSplitsListHeaders(self) -> None:
        """Only list headers are split; combined and separate lines agree."""
        m = request(("Via", "a, b"), ("v", "c"), ("Subject", "x, y"))
        self.assertEqual(m.headerValues("via"), ["a", "b", "c"])
        self.assertEqual(m.headerValues("subject"), ["x, y"])

    def test_emptyAcceptIsEmptyList(self) -> None:
        """An empty Accept accepts nothing and parses (RFC 3261 20.1)."""
        m = request(("Accept", ""))
        self.assertEqual(m.mediaTypes(), [])
        self.assertTrue(m.hasHeader("accept"))

    def test_emptyContactIsError(self) -> None:
        """An empty Contact is an error."""
        m = request(("Contact", ""))
        self.assertRaises(SIPParseError, lambda: m.contacts)


class ParamsTests(SynchronousTestCase):
    """Generic parameters."""

    def test_params(self) -> None:
        """Names are lower-cased, values kept, flags have no value."""
        self.assertEqual(
            parseParams(' ; Tag = AbC ;lr; q=0.5;x="a;b"'),
            {"tag": "AbC", "lr": None, "q": "0.5", "x": '"a;b"'},
        )

    def test_quotedPairInValue(self) -> None:
        """A quoted value may hold an escaped quote (RFC 3261 25.1)."""
        self.assertEqual(parseParams(r';x="a\"b";y=1'), {"x": r'"a\"b"', "y": "1"})

    def test_ipv6Value(self) -> None:
        """A received value may be an IPv6 address."""
        self.assertEqual(
            parseParams(";received=2001:db8::1"), {"received": "2001:db8::1"}
        )

    def test_malformed(self) -> None:
        """Trailing junk is an error."""
        self.assertRaises(SIPParseError, parseParams, ";a=b junk")
        self.assertRaises(SIPParseError, parseParams, ";=b")

    def test_repeated(self) -> None:
        """A parameter name may appear only once (RFC 3261 7.3.1)."""
        self.assertRaises(SIPParseError, parseParams, ";tag=a;TAG=b")
        self.assertRaises(SIPParseError, parseNameAddr, "<sip:a@b>;tag=1;tag=2")
        self.assertRaises(SIPParseError, parseURI, "sip:a@b;lr;lr")

    def test_quoting(self) -> None:
        """Quoting and unquoting are inverse."""
        for text in ("plain", 'with "quotes"', "back\\slash", ""):
            self.assertEqual(unquote(quote(text)), text)


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

    def test_mediaTypesCopies(self) -> None:
        """Changing parsed media types leaves other messages alone."""
        a = request(("Accept", "application/pidf+xml;q=1, text/plain"))
        types = a.mediaTypes()
        types[0].params["q"] = "0"
        types.append(TokenParams("x/y"))
        b = request(("Accept", "application/pidf+xml;q=1, text/plain"))
        self.assertEqual(
            b.mediaTypes(),
            [
                TokenParams("application/pidf+xml", {"q": "1"}),
                TokenParams("text/plain"),
            ],
        )

    def test_integerLimitPerHeader(self) -> None:
        """A cached number is still checked against each header's own limit."""
        self.assertEqual(request(("Expires", "300")).expires, 300)
        m = request(("Max-Forwards", "300"))
        self.assertRaises(SIPParseError, lambda: m.maxForwards)

    @given(st.sampled_from(["via", "from", "contact", "event", "accept"]), HEADER_TEXT)
    def test_parseTwiceSame(self, name: str, value: str) -> None:
        """Parsing a value twice (the second time from a cache) gives equal results."""
        results: list[object] = []
        for _ in range(2):
            m = request((name, value))
            try:
                results.append(
                    (
                        [str(v) for v in m.vias],
                        [str(c) for c in m.contacts],
                        str(m.event),
                        [str(t) for t in m.mediaTypes()],
                        str(m.fromAddr) if m.hasHeader("from") else None,
                    )
                )
            except SIPParseError as e:
                results.append(e.reason)
        self.assertEqual(results[0], results[1])


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

    def test_topVia(self) -> None:
        """The topVia is the first of all Via values, combined or not."""
        m = request(
            ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2"),
            ("v", "SIP/2.0/TCP c;branch=z9hG4bK3"),
        )
        self.assertEqual([v.host for v in m.vias], ["a", "b", "c"])
        self.assertEqual(m.topVia.branch, "z9hG4bK1")

    def test_missingVia(self) -> None:
        """A message without a Via has no topVia."""
        self.assertRaises(SIPParseError, lambda: request().topVia)


class ScalarTests(SynchronousTestCase):
    """CSeq, Max-Forwards, Expires, Call-ID, Event, media types."""

    def test_cseq(self) -> None:
        """A CSeq has a number and a case-sensitive method."""
        self.assertEqual(parseCSeq("4711 subscribe"), CSeq(4711, "subscribe"))
        self.assertEqual(request(("CSeq", "0 SUBSCRIBE")).cseq.number, 0)

    def test_cseqLimit(self) -> None:
        """The CSeq number must be less than 2**31 (RFC 3261 8.1.1.5)."""
        self.assertEqual(parseCSeq(f"{2**31 - 1} A").number, 2**31 - 1)
        self.assertRaises(SIPParseError, parseCSeq, f"{2**31} A")
        self.assertRaises(SIPParseError, parseCSeq, "99999999999 A")

    def test_cseqMalformed(self) -> None:
        """A CSeq without a method or number is an error."""
        for text in ("1", "INVITE", "-1 INVITE", "1 INVITE x", "1,INVITE"):
            self.assertRaises(SIPParseError, parseCSeq, text)

    def test_maxForwards(self) -> None:
        """Max-Forwards is an integer no larger than 255 (RFC 3261 20.22)."""
        self.assertEqual(request(("Max-Forwards", "255")).maxForwards, 255)
        self.assertEqual(request(("Max-Forwards", "0")).maxForwards, 0)
        self.assertIsNone(request().maxForwards)
        m = request(("Max-Forwards", "256"))
        self.assertRaises(SIPParseError, lambda: m.maxForwards)
        m = request(("Max-Forwards", "seventy"))
        self.assertRaises(SIPParseError, lambda: m.maxForwards)

    def test_expires(self) -> None:
        """Expires is at most 2**32-1 (RFC 3261 20.19)."""
        self.assertEqual(request(("Expires", "3600")).expires, 3600)
        self.assertEqual(request(("Expires", str(2**32 - 1))).expires, 2**32 - 1)
        self.assertIsNone(request().expires)
        for bad in (str(2**32), "-1", "1.5", "", "\u0661"):
            m = request(("Expires", bad))
            self.assertRaises(SIPParseError, lambda m=m: m.expires)

    def test_repeatedSingleton(self) -> None:
        """A header that may appear once is an error when repeated."""
        m = request(("Expires", "1"), ("Expires", "1"))
        self.assertRaises(SIPParseError, lambda: m.expires)
        m = request(("Call-ID", "a"), ("i", "a"))
        self.assertRaises(SIPParseError, lambda: m.callId)

    def test_callId(self) -> None:
        """A Call-ID has no whitespace."""
        self.assertEqual(request(("i", "f81d4fae@foo.bar")).callId, "f81d4fae@foo.bar")
        self.assertRaises(SIPParseError, lambda: request(("i", "a b")).callId)
        self.assertRaises(SIPParseError, lambda: request().callId)

    def test_event(self) -> None:
        """An Event has a package and parameters (RFC 6665 8.2.1)."""
        m = request(("o", "Presence;id=17"))
        assert m.event is not None
        self.assertEqual(m.event.value, "presence")
        self.assertEqual(m.event.params, {"id": "17"})
        self.assertIsNone(request().event)
        self.assertEqual(parseEvent("presence.winfo").value, "presence.winfo")
        self.assertRaises(SIPParseError, parseEvent, "pres ence")

    def test_mediaType(self) -> None:
        """Media types are lower-cased with their parameters."""
        t = parseMediaType("Application/PIDF+XML ; charset=UTF-8")
        self.assertEqual(t, TokenParams("application/pidf+xml", {"charset": "UTF-8"}))
        self.assertRaises(SIPParseError, parseMediaType, "text")
        self.assertRaises(SIPParseError, parseMediaType, "text/plain junk")

    def test_accept(self) -> None:
        """Accept lists media types."""
        m = request(("Accept", "application/pidf+xml, multipart/related;q=0.5"))
        self.assertEqual(
            [t.value for t in m.mediaTypes()],
            ["application/pidf+xml", "multipart/related"],
        )

    def test_contentType(self) -> None:
        """The c compact form is Content-Type."""
        m = request(("c", "application/pidf+xml"))
        assert m.contentType is not None
        self.assertEqual(m.contentType.value, "application/pidf+xml")
        self.assertIsNone(request().contentType)

    def test_tokens(self) -> None:
        """Token lists are split and checked."""
        m = request(("k", "eventlist, 100rel"), ("Require", "a b"))
        self.assertEqual(m.tokens("supported"), ["eventlist", "100rel"])
        self.assertRaises(SIPParseError, m.tokens, "require")

    def test_cachedValuesNotShared(self) -> None:
        """Changing a parsed value of one message leaves other messages alone."""
        a = request(("Event", "presence;id=1"), ("Accept", "text/plain"))
        b = request(("Event", "presence;id=1"), ("Accept", "text/plain"))
        assert a.event is not None and b.event is not None
        a.event.params["id"] = "changed"
        a.mediaTypes()[0].params["q"] = "1"
        self.assertEqual(b.event.params, {"id": "1"})
        self.assertEqual(b.mediaTypes()[0].params, {})
        c = request(("Event", "presence;id=1"))
        assert c.event is not None
        self.assertEqual(c.event.params, {"id": "1"})


class AddressHeaderTests(SynchronousTestCase):
    """From, To, Contact and Route-like headers on a message."""

    def test_fromTo(self) -> None:
        """From and To parse, with their tags."""
        m = request(*BASIC)
        self.assertEqual(m.fromAddr.tag, "1234")
        self.assertEqual(m.fromAddr.displayName, "Alice")
        self.assertIsNone(m.toAddr.tag)
        self.assertEqual(m.toAddr.uri, parseURI("sip:bob@example.com"))

    def test_fromMissingOrRepeated(self) -> None:
        """A missing or repeated From is an error."""
        self.assertRaises(SIPParseError, lambda: request().fromAddr)
        m = request(("f", "<sip:a@b>"), ("From", "<sip:a@b>"))
        self.assertRaises(SIPParseError, lambda: m.fromAddr)

    def test_contacts(self) -> None:
        """Contacts split on commas outside quotes, params go to the header."""
        m = request(
            ("m", '"Doe, J" <sip:j@x>;expires=60, sip:k@y;q=0.5'),
            ("Contact", "<sip:l@z>"),
        )
        self.assertEqual([c.displayName for c in m.contacts], ["Doe, J", None, None])
        self.assertEqual(m.contacts[1].params, {"q": "0.5"})
        self.assertFalse(m.contactStar)

    def test_contactStar(self) -> None:
        """Contact: * has no addresses and is flagged."""
        m = request(("Contact", "*"))
        self.assertEqual(m.contacts, [])
        self.assertTrue(m.contactStar)

    def test_recordRoute(self) -> None:
        """Record-Route values are parsed in order by addressList."""
        m = request(
            ("Record-Route", "<sip:p1;lr>, <sip:p2;lr>"), ("Record-Route", "<sip:p3>")
        )
        self.assertEqual(
            [str(a.uri) for a in m.addressList("record-route")],
            ["sip:p1;lr", "sip:p2;lr", "sip:p3"],
        )
        self.assertEqual(request().addressList("Route"), [])

    def test_prependHeaderForgetsParsed(self) -> None:
        """Adding a header forgets the parsed value computed before."""
        m = request(("Via", "SIP/2.0/UDP a;branch=z9hG4bK1"))
        self.assertEqual(m.topVia.host, "a")
        m.prependHeader("Via", "SIP/2.0/UDP b;branch=z9hG4bK2")
        self.assertEqual(m.topVia.host, "b")
        m.addHeader("Expires", "5")
        self.assertEqual(m.expires, 5)


class SerialisationTests(SynchronousTestCase):
    """Writing messages."""

    def test_contentLength(self) -> None:
        """A written message carries the body's true Content-Length, once."""
        m = request(*BASIC, ("Content-Length", "999"), body=b"hello")
        data = m.toBytes()
        self.assertEqual(data.count(b"Content-Length"), 1)
        self.assertIn(b"\r\nContent-Length: 5\r\n\r\nhello", data)
        self.assertEqual(bytes(m), data)

    def test_layout(self) -> None:
        """The start line, canonical names and a blank line are written."""
        m = SIPRequest("OPTIONS", "sip:x", [("i", "a@b"), ("cseq", "1 OPTIONS")])
        self.assertEqual(
            m.toBytes(),
            b"OPTIONS sip:x SIP/2.0\r\nCall-ID: a@b\r\nCSeq: 1 OPTIONS\r\n"
            b"Content-Length: 0\r\n\r\n",
        )

    def test_response(self) -> None:
        """A response writes its status line with the standard phrase."""
        r = SIPResponse(489)
        self.assertTrue(r.toBytes().startswith(b"SIP/2.0 489 Bad Event\r\n"))

    def test_requestURI(self) -> None:
        """A request built from a parsed URI writes and returns it."""
        uri = parseURI("sip:bob@example.com;transport=tcp")
        m = SIPRequest("NOTIFY", uri)
        self.assertEqual(m.uriText, "sip:bob@example.com;transport=tcp")
        self.assertIs(m.uri, uri)

    def test_equality(self) -> None:
        """Messages compare by start line, headers (not Content-Length) and body."""
        a = request(*BASIC, ("Content-Length", "0"))
        self.assertEqual(a, request(*BASIC))
        self.assertNotEqual(a, request(*BASIC[1:]))
        self.assertNotEqual(a, SIPResponse(200, "OK", BASIC))


class ResponseToTests(SynchronousTestCase):
    """responseTo (RFC 3261 8.2.6.2)."""

    def test_copies(self) -> None:
        """Via (every one, in order), From, To, Call-ID and CSeq are copied."""
        req = request(*BASIC, ("Contact", "<sip:a@b>"))
        resp = responseTo(req, 200, toTag="srv1", headers=[("Expires", "60")])
        self.assertEqual(resp.code, 200)
        self.assertEqual(resp.phrase, "OK")
        self.assertEqual(resp.headerLines("via"), req.headerLines("via"))
        self.assertEqual(resp.header("from"), req.header("from"))
        self.assertEqual(resp.header("call-id"), "abc@192.0.2.1")
        self.assertEqual(resp.header("cseq"), "7 SUBSCRIBE")
        self.assertEqual(resp.toAddr.tag, "srv1")
        self.assertEqual(resp.expires, 60)
        self.assertFalse(resp.hasHeader("contact"))

    def test_noTagOn100(self) -> None:
        """A 100 Trying gets no To tag (RFC 3261 8.2.6.1)."""
        resp = responseTo(request(*BASIC), 100, toTag="srv1")
        self.assertIsNone(resp.toAddr.tag)

    def test_existingTagKept(self) -> None:
        """A To that has a tag keeps it."""
        req = request(*BASIC[:3], ("To", "<sip:bob@example.com>;tag=old"))
        self.assertEqual(responseTo(req, 200, toTag="new").toAddr.tag, "old")

    def test_addrSpecTo(self) -> None:
        """A tag added to an addr-spec To is a header parameter."""
        req = request(("To", "sip:bob@example.com"))
        resp = responseTo(req, 404, toTag="t")
        self.assertEqual(resp.toAddr.tag, "t")
        self.assertEqual(resp.toAddr.uri, parseURI("sip:bob@example.com"))

    def test_server(self) -> None:
        """A Server header, when given, ends the headers; none is added otherwise."""
        req = request(*BASIC)
        resp = responseTo(req, 200, headers=[("Expires", "60")], server="p/1.0")
        self.assertEqual(resp.headers[-2:], [("expires", "60"), ("server", "p/1.0")])
        self.assertFalse(responseTo(req, 200).hasHeader("server"))

    def test_malformedRequest(self) -> None:
        """A response can be built for a request whose headers are malformed."""
        req = request(("To", "<<bad"), ("CSeq", "x"))
        resp = responseTo(req, 400, toTag="t")
        self.assertEqual(resp.header("to"), "<<bad")
        self.assertEqual(resp.header("cseq"), "x")


class AccessorFuzzTests(SynchronousTestCase):
    """Accessors raise nothing but SIPParseError on arbitrary values."""

    NAMES = (
        "via",
        "from",
        "to",
        "call-id",
        "cseq",
        "contact",
        "event",
        "expires",
        "max-forwards",
        "content-type",
        "accept",
        "supported",
        "record-route",
        "content-length",
    )

    def _exercise(self, name: str, value: str) -> None:
        m = request((name, value))
        m.uriText = value
        accessors = [
            lambda: [(v.branch, v.rport, v.sentBy, str(v)) for v in m.vias],
            lambda: m.topVia,
            lambda: (m.fromAddr.tag, str(m.fromAddr)),
            lambda: str(m.toAddr.uri),
            lambda: m.callId,
            lambda: str(m.cseq),
            lambda: [str(c) for c in m.contacts],
            lambda: m.contactStar,
            lambda: str(m.event),
            lambda: m.expires,
            lambda: m.maxForwards,
            lambda: m.contentLength,
            lambda: str(m.contentType),
            lambda: m.mediaTypes(),
            lambda: m.tokens(name),
            lambda: m.addressList(name),
            lambda: m.headerValues(name),
            lambda: m.uri,
        ]
        for accessor in accessors:
            try:
                accessor()
            except SIPParseError:
                pass
        try:
            uri = parseURI(value)
        except SIPParseError:
            return
        if isinstance(uri, SIPURI):
            self.assertEqual(uri, uri)
            hash(uri)
            uri.aor()
            self.assertEqual(parseURI(str(uri)), uri)

    @given(st.sampled_from(NAMES), HEADER_TEXT)
    def test_arbitraryText(self, name: str, value: str) -> None:
        """Arbitrary text raises nothing but SIPParseError."""
        self._exercise(name, value)

    @given(st.sampled_from(NAMES), GRAMMAR_TEXT)
    def test_grammarCharacters(self, name: str, value: str) -> None:
        """Text made of the grammar's special characters raises only SIPParseError."""
        self._exercise(name, value)

    @given(st.sampled_from(NAMES), GRAMMAR_TEXT)
    def test_prefixedGrammar(self, name: str, value: str) -> None:
        """Valid-looking prefixes followed by junk raise only SIPParseError."""
        prefixes = {
            "via": "SIP/2.0/UDP host",
            "from": "<sip:a@b>",
            "to": '"x" <sip:a@b',
            "contact": "sip:a@b",
            "cseq": "1 ",
        }
        self._exercise(name, prefixes.get(name, "sip:") + value)


class SalvageTests(SynchronousTestCase):
    """What is read of a malformed top Via, so that a 400 can be routed."""

    def test_firstElement(self) -> None:
        """The first element of a list, commas in quotes and brackets ignored."""
        from presence.sip.message import firstElement

        self.assertEqual(firstElement(" a , b"), "a")
        self.assertEqual(firstElement('"x, y" <sip:a@b>, c'), '"x, y" <sip:a@b>')
        self.assertEqual(firstElement("<sip:a@b;p=1,2>, c"), "<sip:a@b;p=1,2>")
        self.assertEqual(firstElement("single"), "single")

    def test_salvageVia(self) -> None:
        """RFC 4475 3.1.2.1: empty parameters are skipped, sent-by is kept."""
        from presence.sip.message import salvageVia

        via = salvageVia("SIP/2.0/UDP 192.0.2.15;;,;,,")
        assert via is not None
        self.assertEqual(
            (via.transport, via.host, via.port), ("UDP", "192.0.2.15", None)
        )
        via = salvageVia("SIP/2.0/UDP 192.0.2.15:5070;branch=z9hG4bK1;;rport")
        assert via is not None
        self.assertEqual((via.port, via.branch), (5070, "z9hG4bK1"))
        self.assertIsNone(salvageVia("garbage"))

    def test_topViaOnlyFirst(self) -> None:
        """The top Via is read alone: a bad lower Via leaves a response routable."""
        from presence.sip.parser import parseDatagram

        message = parseDatagram(
            b"OPTIONS sip:a@b SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1, junk junk\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        self.assertEqual(message.topVia.branch, "z9hG4bK1")
        self.assertRaises(SIPParseError, lambda: message.vias)
