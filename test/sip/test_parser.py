"""Tests for `presence.sip.parser`: datagrams and stream framing."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from presence.sip.errors import SIPParseError
from presence.sip.message import (
    COMPACT_FORMS,
    SIPURI,
    SIPMessage,
    SIPRequest,
    SIPResponse,
    canonicalName,
    parseURI,
    unescape,
)
from presence.sip.parser import (
    KEEPALIVE,
    MAX_MESSAGE_SIZE,
    KeepAlive,
    StreamFramer,
    parseDatagram,
)

SUBSCRIBE = (
    b"SUBSCRIBE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds7;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:bob@example.com>\r\n"
    b"From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710\r\n"
    b"CSeq: 1 SUBSCRIBE\r\n"
    b"Event: presence\r\n"
    b"Contact: <sip:alice@192.0.2.1>\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

PIDF = b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b"/>'


def publish(contentLength: bytes | None, body: bytes = PIDF) -> bytes:
    """A PUBLISH with the given Content-Length line value (or none)."""
    lines = [
        b"PUBLISH sip:alice@example.com SIP/2.0",
        b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1",
        b"From: <sip:alice@example.com>;tag=1",
        b"To: <sip:alice@example.com>",
        b"Call-ID: p1",
        b"CSeq: 1 PUBLISH",
        b"Event: presence",
        b"Content-Type: application/pidf+xml",
    ]
    if contentLength is not None:
        lines.append(b"Content-Length: " + contentLength)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class DatagramTests(SynchronousTestCase):
    """parseDatagram (RFC 3261 sections 7 and 18.3)."""

    def test_request(self) -> None:
        """A request's start line and headers are parsed, in order."""
        m = parseDatagram(SUBSCRIBE)
        assert isinstance(m, SIPRequest)
        self.assertEqual(
            (m.method, m.uriText, m.version),
            (
                "SUBSCRIBE",
                "sip:bob@example.com",
                "SIP/2.0",
            ),
        )
        self.assertEqual([n for n, _ in m.headers][:3], ["via", "max-forwards", "to"])
        self.assertEqual(m.topVia.branch, "z9hG4bKnashds7")
        self.assertEqual(m.fromAddr.displayName, "Alice")
        self.assertEqual(m.body, b"")

    def test_response(self) -> None:
        """A response's status line is parsed."""
        m = parseDatagram(
            b"SIP/2.0 481 Call/Transaction Does Not Exist\r\nCSeq: 1 NOTIFY\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        assert isinstance(m, SIPResponse)
        self.assertEqual((m.code, m.phrase), (481, "Call/Transaction Does Not Exist"))
        self.assertEqual(m.cseq.method, "NOTIFY")

    def test_compactAndCase(self) -> None:
        """Compact forms expand and names lose their case (RFC 3261 7.3.3)."""
        m = parseDatagram(
            b"OPTIONS sip:x SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
            b"i: a@b\r\nCONTENT-length: 0\r\nX-Custom : y\r\n\r\n"
        )
        self.assertEqual(
            m.headers,
            [
                ("via", "SIP/2.0/UDP h;branch=z9hG4bK1"),
                ("call-id", "a@b"),
                ("content-length", "0"),
                ("x-custom", "y"),
            ],
        )

    def test_folding(self) -> None:
        """A line starting with whitespace continues a header (RFC 3261 7.3.1)."""
        m = parseDatagram(
            b"OPTIONS sip:x SIP/2.0\r\nSubject: I know you're there,\r\n"
            b"  pick up the phone\r\n\tand talk to me!\r\nContent-Length: 0\r\n\r\n"
        )
        self.assertEqual(
            m.header("subject"),
            "I know you're there, pick up the phone and talk to me!",
        )

    def test_foldedLineWithColon(self) -> None:
        """A continuation line holding a colon still continues (RFC 3261 7.3.1)."""
        m = parseDatagram(
            b"OPTIONS sip:x SIP/2.0\r\nTo:\r\n <sip:bob@example.com>\r\n"
            b"Subject: a\r\n\tb: c\r\nContent-Length: 0\r\n\r\n"
        )
        self.assertEqual(m.header("to"), "<sip:bob@example.com>")
        self.assertEqual(m.header("subject"), "a b: c")
        self.assertEqual(len(m.headers), 3)

    def test_whitespaceAroundColon(self) -> None:
        """Whitespace around the colon and at the line end is dropped."""
        m = parseDatagram(b"OPTIONS sip:x SIP/2.0\r\nTo  :\t <sip:a@b> \t\r\n\r\n")
        self.assertEqual(m.header("to"), "<sip:a@b>")

    def test_bareLF(self) -> None:
        """Bare LF line endings are accepted."""
        data = SUBSCRIBE.replace(b"\r\n", b"\n")
        self.assertEqual(parseDatagram(data), parseDatagram(SUBSCRIBE))

    def test_bareLFBodyWithCRLF(self) -> None:
        """With bare LFs the first empty line ends the head, whatever the body holds."""
        data = publish(None, b"a\r\n\r\nb").replace(b"\r\n", b"\n", 9)
        m = parseDatagram(data)
        self.assertEqual(m.body, b"a\r\n\r\nb")
        self.assertEqual(m.header("content-type"), "application/pidf+xml")

    def test_mixedLineEnds(self) -> None:
        """A bare-LF line end before an empty CRLF line ends the head there."""
        data = b"PUBLISH sip:a@b SIP/2.0\nCall-ID: x\n\r\nbody\r\n\r\nmore"
        m = parseDatagram(data)
        self.assertEqual(m.headers, [("call-id", "x")])
        self.assertEqual(m.body, b"body\r\n\r\nmore")

    def test_leadingCRLF(self) -> None:
        """CRLFs before the start line are ignored (RFC 3261 7.5)."""
        for prefix in (b"\r\n", b"\r\n\r\n", b"\n", b"\n\r\n"):
            self.assertEqual(
                parseDatagram(prefix + SUBSCRIBE), parseDatagram(SUBSCRIBE)
            )

    def test_noContentLength(self) -> None:
        """Without Content-Length the body is all the rest (RFC 3261 18.3)."""
        m = parseDatagram(publish(None))
        self.assertEqual(m.body, PIDF)
        self.assertIsNone(m.contentLength)

    def test_publishOverUDPWithoutContentLength(self) -> None:
        """A UDP PUBLISH without Content-Length keeps its whole PIDF body."""
        m = parseDatagram(publish(None))
        assert isinstance(m, SIPRequest)
        self.assertEqual(m.method, "PUBLISH")
        assert m.contentType is not None
        self.assertEqual(m.contentType.value, "application/pidf+xml")
        self.assertEqual(m.body, PIDF)

    def test_shortContentLength(self) -> None:
        """Octets past the Content-Length are discarded (RFC 3261 18.3)."""
        m = parseDatagram(publish(b"10"))
        self.assertEqual(m.body, PIDF[:10])

    def test_longContentLength(self) -> None:
        """A Content-Length past the end is an answerable 400 (RFC 3261 18.3)."""
        e = self.assertRaises(
            SIPParseError, parseDatagram, publish(str(len(PIDF) + 1).encode())
        )
        self.assertTrue(e.canRespond)
        assert e.request is not None
        self.assertEqual(e.code, 400)
        self.assertEqual(e.request.callId, "p1")
        self.assertEqual(e.request.topVia.branch, "z9hG4bK1")

    def test_malformedContentLength(self) -> None:
        """A malformed or repeated Content-Length is an answerable error."""
        for value in (b"-1", b"abc", b"1 2", b"99999999999"):
            e = self.assertRaises(SIPParseError, parseDatagram, publish(value))
            self.assertTrue(e.canRespond, repr(value))
        data = publish(b"0").replace(b"\r\n\r\n", b"\r\nl: 0\r\n\r\n", 1)
        self.assertTrue(
            self.assertRaises(SIPParseError, parseDatagram, data).canRespond
        )

    def test_responseErrorsNotAnswerable(self) -> None:
        """Errors in a response never carry a request."""
        for data in (
            b"SIP/2.0 200 OK\r\nContent-Length: 5\r\n\r\n",
            b"SIP/2.0 2000 OK\r\n\r\n",
            b"SIP/2.0 099 Low\r\n\r\n",
            b"SIP/3.0 200 OK\r\n\r\n",
            b"SIP/2.0\r\n\r\n",
        ):
            e = self.assertRaises(SIPParseError, parseDatagram, data)
            self.assertFalse(e.canRespond, repr(data))

    def test_badRequestLine(self) -> None:
        """An unreadable request line cannot be answered."""
        for line in (
            b"",
            b"INVITE",
            b"INVITE sip:x",
            b"INVITE sip:x SIP/2.0 extra",
            b"\x00",
        ):
            e = self.assertRaises(SIPParseError, parseDatagram, line + b"\r\n\r\n")
            self.assertFalse(e.canRespond, repr(line))

    def test_extraWhitespaceInRequestLine(self) -> None:
        """Extra spaces in the request line get an answerable 400 (RFC 4475 3.1.2.7)."""
        for line in (
            b"SUBSCRIBE  sip:bob@example.com SIP/2.0",
            b"SUBSCRIBE sip:bob@example.com SIP/2.0 ",
            b"SUBSCRIBE sip:bob@example.com; lr SIP/2.0",
        ):
            data = line + SUBSCRIBE[SUBSCRIBE.index(b"\r\n") :]
            e = self.assertRaises(SIPParseError, parseDatagram, data)
            self.assertTrue(e.canRespond, repr(line))
            self.assertEqual(e.code, 400)
            assert e.request is not None
            self.assertEqual(e.request.method, "SUBSCRIBE")
            self.assertEqual(e.request.callId, "a84b4c76e66710")

    def test_versionNotSupported(self) -> None:
        """A request of another SIP version is answered 505 (RFC 3261 21.5.20)."""
        e = self.assertRaises(
            SIPParseError,
            parseDatagram,
            SUBSCRIBE.replace(b"SIP/2.0\r\n", b"SIP/7.0\r\n", 1),
        )
        self.assertEqual(e.code, 505)
        self.assertTrue(e.canRespond)

    def test_malformedHeaderLine(self) -> None:
        """A header line without a colon, or a bad name, is an answerable 400."""
        for line in (b"NoColonHere", b": empty name", b"Bad Name: x", b"X: a\rb"):
            data = SUBSCRIBE.replace(b"Event:", line + b"\r\nEvent:", 1)
            e = self.assertRaises(SIPParseError, parseDatagram, data)
            self.assertTrue(e.canRespond, repr(line))
            self.assertEqual(e.code, 400)

    def test_tooLarge(self) -> None:
        """A datagram over the maximum size is refused."""
        data = publish(None, b"x" * MAX_MESSAGE_SIZE)
        e = self.assertRaises(SIPParseError, parseDatagram, data)
        self.assertEqual(e.code, 513)

    def test_empty(self) -> None:
        """An empty or blank datagram is an error."""
        for data in (b"", b"\r\n", b"\r\n\r\n", b"   "):
            self.assertRaises(SIPParseError, parseDatagram, data)

    def test_utf8(self) -> None:
        """Header values are decoded as UTF-8."""
        m = parseDatagram(
            SUBSCRIBE.replace(b"Alice", '"J\u00fcrgen \u00c4"'.encode(), 1)
        )
        self.assertEqual(m.fromAddr.displayName, "J\u00fcrgen \u00c4")

    def test_invalidUTF8Refused(self) -> None:
        """A header that is not UTF-8 is an error that can be answered.

        RFC 3261 section 25.1: text in the grammar is UTF-8
        (``UTF8-NONASCII``); bytes that are not UTF-8 are valid nowhere. The
        request is kept, its bytes intact, so that the 400 echoes them back.
        """
        data = SUBSCRIBE.replace(b"Event:", b"Subject: \xff\xfe\r\nEvent:", 1)
        e = self.assertRaises(SIPParseError, parseDatagram, data)
        self.assertEqual(e.reason, "Subject header is not valid UTF-8")
        self.assertEqual(e.code, 400)
        assert e.request is not None
        self.assertIn(b"Subject: \xff\xfe\r\n", e.request.toBytes())

    def test_invalidUTF8InStartLine(self) -> None:
        """Bytes that are not UTF-8 in the Request-URI are refused the same way."""
        data = SUBSCRIBE.replace(b"sip:bob@", b"sip:b\xffb@", 1)
        e = self.assertRaises(SIPParseError, parseDatagram, data)
        self.assertEqual(e.reason, "start line is not valid UTF-8")

    def test_validUTF8Accepted(self) -> None:
        """Text in UTF-8 is fine where the grammar allows it."""
        data = SUBSCRIBE.replace(
            b"Event:", "Subject: caf\u00e9 \u2603\r\nEvent:".encode(), 1
        )
        self.assertEqual(parseDatagram(data).header("subject"), "caf\u00e9 \u2603")

    def test_serialiseRoundTrip(self) -> None:
        """Writing a parsed message gives the same message back."""
        m = parseDatagram(publish(None))
        again = parseDatagram(m.toBytes())
        self.assertEqual(again, m)
        self.assertEqual(again.contentLength, len(PIDF))


class StreamFramerTests(SynchronousTestCase):
    """StreamFramer (RFC 3261 18.3)."""

    def test_oneMessage(self) -> None:
        """A whole message in one read comes out at once."""
        framer = StreamFramer()
        self.assertEqual(framer.dataReceived(SUBSCRIBE), [parseDatagram(SUBSCRIBE)])
        self.assertEqual(framer.buffered, 0)

    def test_twoMessagesOneRead(self) -> None:
        """Two messages in one read both come out, in order."""
        second = publish(str(len(PIDF)).encode())
        out = StreamFramer().dataReceived(SUBSCRIBE + second)
        self.assertEqual(out, [parseDatagram(SUBSCRIBE), parseDatagram(second)])

    def test_manyReads(self) -> None:
        """A message split over many reads comes out once it is complete."""
        data = publish(str(len(PIDF)).encode())
        for size in (1, 2, 3, 7, 50):
            framer = StreamFramer()
            out: list[object] = []
            for i in range(0, len(data), size):
                out.extend(framer.dataReceived(data[i : i + size]))
            self.assertEqual(out, [parseDatagram(data)], size)
            self.assertEqual(framer.buffered, 0)

    def test_byteAtATime(self) -> None:
        """Several messages fed one byte at a time come out whole."""
        body = publish(str(len(PIDF)).encode())
        data = SUBSCRIBE + b"\r\n\r\n" + body + SUBSCRIBE
        framer = StreamFramer()
        out: list[object] = []
        for i in range(len(data)):
            out.extend(framer.dataReceived(data[i : i + 1]))
        self.assertEqual(
            out,
            [
                parseDatagram(SUBSCRIBE),
                KEEPALIVE,
                parseDatagram(body),
                parseDatagram(SUBSCRIBE),
            ],
        )

    def test_keepAlive(self) -> None:
        """A double CRLF between messages is a keep-alive ping (RFC 5626 3.5.1)."""
        framer = StreamFramer()
        self.assertEqual(framer.dataReceived(b"\r\n\r\n"), [KEEPALIVE])
        self.assertEqual(framer.dataReceived(b"\r\n"), [])
        self.assertEqual(
            framer.dataReceived(b"\r\n" + SUBSCRIBE),
            [
                KEEPALIVE,
                parseDatagram(SUBSCRIBE),
            ],
        )
        self.assertIsInstance(KEEPALIVE, KeepAlive)
        self.assertEqual(repr(KEEPALIVE), "KEEPALIVE")

    def test_keepAliveBetweenMessages(self) -> None:
        """Pings between messages in one read come out in order."""
        out = StreamFramer().dataReceived(SUBSCRIBE + b"\r\n\r\n" + SUBSCRIBE)
        m = parseDatagram(SUBSCRIBE)
        self.assertEqual(out, [m, KEEPALIVE, m])

    def test_bodyWithBlankLines(self) -> None:
        """A body holding CRLF CRLF is framed by its Content-Length only."""
        body = b"a\r\n\r\nb"
        data = publish(str(len(body)).encode(), body)
        framer = StreamFramer()
        out: list[object] = []
        for i in range(len(data)):
            out.extend(framer.dataReceived(data[i : i + 1]))
        self.assertEqual(out, [parseDatagram(data)])
        self.assertEqual(parseDatagram(data).body, body)

    def test_singleCRLFSkipped(self) -> None:
        """A lone CRLF before a message is skipped without a ping."""
        self.assertEqual(
            StreamFramer().dataReceived(b"\r\n" + SUBSCRIBE), [parseDatagram(SUBSCRIBE)]
        )

    def test_missingContentLength(self) -> None:
        """A message without Content-Length breaks the stream (RFC 3261 18.3)."""
        framer = StreamFramer()
        out = framer.dataReceived(publish(None) + SUBSCRIBE)
        self.assertEqual(len(out), 1)
        e = out[0]
        assert isinstance(e, SIPParseError)
        self.assertTrue(e.canRespond)
        self.assertEqual(framer.dataReceived(SUBSCRIBE), [])

    def test_oversize(self) -> None:
        """A message longer than the limit is answered 513 (RFC 3261 21.5.14)."""
        framer = StreamFramer(maxSize=1000)
        out = framer.dataReceived(publish(b"2000"))
        self.assertEqual(len(out), 1)
        e = out[0]
        assert isinstance(e, SIPParseError)
        self.assertEqual(e.code, 513)
        self.assertTrue(e.canRespond)

    def test_endlessHeader(self) -> None:
        """A header that never ends breaks the stream once it passes the limit."""
        framer = StreamFramer(maxSize=100)
        self.assertEqual(framer.dataReceived(b"OPTIONS sip:x SIP/2.0\r\n"), [])
        out = framer.dataReceived(b"X: " + b"y" * 200)
        self.assertEqual(len(out), 1)
        self.assertIsInstance(out[0], SIPParseError)

    def test_garbage(self) -> None:
        """An unreadable start line breaks the stream without a response."""
        out = StreamFramer().dataReceived(b"garbage\r\n\r\n")
        e = out[0]
        assert isinstance(e, SIPParseError)
        self.assertFalse(e.canRespond)

    def test_bareLF(self) -> None:
        """A message with bare LF line endings is framed too."""
        data = publish(str(len(PIDF)).encode()).replace(b"\r\n", b"\n")
        framer = StreamFramer()
        out: list[object] = []
        for i in range(len(data)):
            out.extend(framer.dataReceived(data[i : i + 1]))
        self.assertEqual(out, [parseDatagram(data)])


# -- properties -------------------------------------------------------------------

_TOKEN_CHARS = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
)
tokens = st.text(st.sampled_from(_TOKEN_CHARS), min_size=1, max_size=12)
hosts = st.one_of(
    st.from_regex(r"\A[a-z][a-z0-9]{0,8}(\.[a-z][a-z0-9]{0,8}){0,3}\Z"),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)
users = st.from_regex(r"\A([a-zA-Z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-F]{2})+\Z")
# paramchar (RFC 3261 25.1): unreserved, param-unreserved or escaped.
paramchars = st.from_regex(r"\A([a-zA-Z0-9\-_.!~*'()\[\]/:&+$]|%[0-9a-f]{2})+\Z")
uriParams = st.lists(
    st.tuples(paramchars, st.one_of(st.none(), paramchars)),
    max_size=3,
    unique_by=lambda p: unescape(p[0]).lower(),
).map(lambda ps: "".join(f";{n}" if v is None else f";{n}={v}" for n, v in ps))
sipURIs = st.builds(
    lambda scheme, user, host, port, params: (
        f"{scheme}:{'' if user is None else user + '@'}{host}"
        f"{'' if port is None else f':{port}'}{params}"
    ),
    st.sampled_from(["sip", "sips"]),
    st.one_of(st.none(), users),
    hosts,
    st.one_of(st.none(), st.integers(0, 65535)),
    uriParams,
)
headerNames = st.one_of(
    st.sampled_from(
        ["Via", "From", "To", "Call-ID", "CSeq", "Contact", "Event", "Expires", "X-A"]
    ),
    tokens,
).filter(lambda n: n.lower() != "content-length" and n.lower() != "l")
headerValues = st.text(
    st.characters(
        blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="\r\n"
    ),
    max_size=40,
).map(lambda v: v.strip(" \t"))
headerLists = st.lists(st.tuples(headerNames, headerValues), max_size=12)
# Bytes built from integers: mixing st.binary with st.text in one test makes
# Hypothesis compare bytes with str in its own cache, which -bb turns into an
# error.
bodies = st.lists(st.integers(0, 255), max_size=200).map(bytes)

requests = st.builds(
    lambda method, uri, headers, body: SIPRequest(method, uri, headers, body),
    tokens,
    sipURIs,
    headerLists,
    bodies,
)
responses = st.builds(
    lambda code, phrase, headers, body: SIPResponse(code, phrase, headers, body),
    st.integers(100, 699),
    st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=20),
    headerLists,
    bodies,
)
messages = st.one_of(requests, responses)


def framed(data: bytes) -> list[object]:
    """Feed ``data`` to a new framer and return what comes out."""
    return list(StreamFramer().dataReceived(data))


class PropertyTests(SynchronousTestCase):
    """Properties of the parser and serialiser over generated messages."""

    @given(messages)
    def test_roundTripDatagram(self, m: SIPMessage) -> None:
        """parseDatagram(toBytes(m)) == m for valid requests and responses."""
        again = parseDatagram(m.toBytes())
        self.assertEqual(again, m)
        self.assertEqual(again.toBytes(), m.toBytes())

    @given(st.lists(messages, min_size=1, max_size=3), st.integers(1, 50))
    def test_roundTripStream(self, ms: list[SIPMessage], chunk: int) -> None:
        """Messages written to a stream in chunks are framed back equal."""
        data = b"".join(m.toBytes() for m in ms)
        framer = StreamFramer()
        out: list[object] = []
        for i in range(0, len(data), chunk):
            out.extend(framer.dataReceived(data[i : i + chunk]))
        self.assertEqual(out, ms)

    @given(sipURIs)
    def test_requestURIRoundTrip(self, text: str) -> None:
        """Generated SIP URIs parse, and written back parse equal."""
        m = parseDatagram(SIPRequest("OPTIONS", text).toBytes())
        assert isinstance(m, SIPRequest)
        self.assertEqual(m.uriText, text)
        uri = m.uri
        assert isinstance(uri, SIPURI)
        again = parseURI(str(uri))
        self.assertEqual(again, uri)
        self.assertEqual(hash(again), hash(uri))
        self.assertEqual(str(again).lower(), text.lower())

    @given(st.binary(max_size=300))
    def test_arbitraryBytes(self, data: bytes) -> None:
        """Arbitrary bytes raise nothing but SIPParseError."""
        try:
            parseDatagram(data)
        except SIPParseError:
            pass
        for item in framed(data):
            self.assertIsInstance(item, (SIPMessage, KeepAlive, SIPParseError))

    @given(
        messages,
        st.lists(
            st.tuples(
                st.integers(0, 10_000),
                st.integers(0, 5),
                st.lists(st.integers(0, 255), max_size=4).map(bytes),
            ),
            min_size=1,
            max_size=4,
        ),
    )
    def test_mutatedMessages(
        self, m: SIPMessage, edits: list[tuple[int, int, bytes]]
    ) -> None:
        """Valid messages with bytes replaced raise nothing but SIPParseError."""
        data = bytearray(m.toBytes())
        for position, length, replacement in edits:
            at = position % (len(data) + 1)
            data[at : at + length] = replacement
        try:
            parsed = parseDatagram(bytes(data))
        except SIPParseError:
            pass
        else:
            for accessor in (
                lambda: parsed.vias,
                lambda: parsed.fromAddr,
                lambda: parsed.toAddr,
                lambda: parsed.cseq,
                lambda: parsed.callId,
                lambda: parsed.contacts,
                lambda: parsed.event,
                lambda: parsed.expires,
            ):
                try:
                    accessor()
                except SIPParseError:
                    pass
        framed(bytes(data))

    @given(st.sampled_from(sorted(COMPACT_FORMS)), headerValues)
    def test_compactFormsRoundTrip(self, short: str, value: str) -> None:
        """A compact header is written under its full name and parses back."""
        m = SIPRequest("OPTIONS", "sip:x", [(short, value)])
        data = m.toBytes()
        if short != "l":
            self.assertIn(canonicalName(COMPACT_FORMS[short]).encode() + b":", data)
            self.assertEqual(parseDatagram(data), m)
