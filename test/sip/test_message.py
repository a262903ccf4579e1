"""Tests for `presence.sip.message`: messages, their header accessors, responses.

The values themselves are tested with their modules: test_grammar, test_uri
and test_headers.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from presence.sip.errors import SIPParseError
from presence.sip.message import (
    SIPURI,
    SIPRequest,
    SIPResponse,
    TokenParams,
    parseURI,
    responseTo,
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


class NormalisedNameTests(SynchronousTestCase):
    """Header names are normalised the same way the first time and after."""

    def test_sameEveryTime(self) -> None:
        """Mixed case and compact forms, twice: the same names and index."""
        for _ in range(2):
            message = request(("I", "c1"), ("CALL-ID", "c2"), ("Content-Type", "a/b"))
            self.assertEqual(
                [name for name, _ in message.headers],
                ["call-id", "call-id", "content-type"],
            )
            self.assertEqual(message.headerLines("call-id"), ["c1", "c2"])


class SplitListTests(SynchronousTestCase):
    """Splitting comma-separated list headers (RFC 3261 7.3.1)."""

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


class CacheTests(SynchronousTestCase):
    """Values parsed once and reused across messages stay private to each."""

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


class ViaTests(SynchronousTestCase):
    """Via values (RFC 3261 20.42, RFC 3581)."""

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
        """A message's CSeq is parsed when asked for."""
        self.assertEqual(request(("CSeq", "0 SUBSCRIBE")).cseq.number, 0)

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

    def test_indexMatchesHeaders(self) -> None:
        """The response's index (built with its headers) answers like a parsed one.

        Extra header names are case-insensitive and compact forms are the
        long ones (RFC 3261 7.3.1, 7.3.3), as in a message built from text.
        """
        req = request(*BASIC)
        resp = responseTo(
            req, 200, headers=[("EXPIRES", "60"), ("m", "<sip:a@b>")], server="p"
        )
        rebuilt = SIPResponse(resp.code, resp.phrase, resp.headers, resp.body)
        self.assertEqual(resp, rebuilt)
        self.assertEqual(resp.header("contact"), "<sip:a@b>")
        self.assertEqual(resp.expires, 60)
        self.assertEqual(resp.headerLines("via"), req.headerLines("via"))
        resp.prependHeader("via", "SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKx")
        self.assertEqual(len(req.headerLines("via")), 2)

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


class ReexportTests(SynchronousTestCase):
    """The names of grammar, uri and headers can still be imported from message."""

    def test_sameObjects(self) -> None:
        """Every public name of those modules is in message, the same object."""
        from presence.sip import grammar, headers, message, uri

        for module in (grammar, uri, headers):
            for name in module.__all__:
                self.assertIn(name, message.__all__)
                self.assertIs(getattr(message, name), getattr(module, name))
