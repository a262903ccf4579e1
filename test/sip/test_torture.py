"""The RFC 4475 torture messages, through the parser and through the server.

The messages are in ``test/sip/torture/`` byte for byte, with what each must
give in ``expected.py`` (loaded by path: ``test/`` is not a package).

Valid messages (RFC 4475 section 3.1.1) must parse, give the fields listed
for them through the message API, and be answered as a UAS answers them;
never with 400. Invalid messages (section 3.1.2) must get the answer the RFC
asks for over UDP, and be answered over TCP as a stream allows.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from presence.sip.errors import SIPParseError
from presence.sip.message import (
    COMPACT_FORMS,
    SIPURI,
    NameAddr,
    SIPMessage,
    SIPRequest,
    SIPResponse,
    parseVia,
    unescape,
    unquote,
)
from presence.sip.parser import StreamFramer, parseDatagram
from presence.testing import SERVER, Server

TORTURE = Path(__file__).parent / "torture"
SOURCE = ("192.0.2.20", 5070)


def _loadExpected() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "torture_expected", TORTURE / "expected.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_EXPECTED = _loadExpected()
VALID: dict[str, dict[str, Any]] = _EXPECTED.VALID
INVALID: dict[str, dict[str, Any]] = _EXPECTED.INVALID


def torture(kind: str, name: str) -> bytes:
    """The bytes of one torture message (``kind`` is valid or invalid)."""
    return (TORTURE / kind / f"{name}.dat").read_bytes()


OPTIONS = (
    b"OPTIONS sip:192.0.2.10 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.20:5070;branch=z9hG4bK-after-1;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:192.0.2.10>\r\n"
    b"From: <sip:probe@example.com>;tag=after\r\n"
    b"Call-ID: after-torture@192.0.2.20\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def _optionsOverTCP() -> bytes:
    return (
        OPTIONS.replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP")
        .replace(b"z9hG4bK-after-1", b"z9hG4bK-after-2")
        .replace(b"Call-ID: after-torture", b"Call-ID: after-torture-tcp")
    )


# -- reading the raw message, independently of the parser -------------------


def rawHeaders(data: bytes) -> dict[str, list[str]]:
    """The header lines of ``data`` by lower-case full name, unfolded.

    A deliberately naive reading of the bytes, so that tests can compare what
    the server sent back with what the client wrote.
    """
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "surrogateescape")
    head = re.sub(r"\r\n[ \t]+", " ", head)
    out: dict[str, list[str]] = {}
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        name = COMPACT_FORMS.get(name, name)
        out.setdefault(name, []).append(value.strip(" \t"))
    return out


_QUOTED_RE = re.compile(r'\s*("(?:[^"\\]|\\.)*")', re.DOTALL)


def _rawDisplayName(value: str) -> str:
    m = _QUOTED_RE.match(value)
    return m.group(1) if m is not None else value.split("<", 1)[0].strip()


def _parts(message: SIPMessage) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart body: (headers by lower-case name, body)."""
    contentType = message.contentType
    assert contentType is not None
    boundary = unquote(contentType.params["boundary"] or "").encode()
    delimiter = b"\r\n--" + boundary
    body = b"\r\n" + message.body
    out = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, partBody = chunk[2:].partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        out.append((headers, partBody))
    return out


# -- the fields of expected.py, through the message API ----------------------


def _param(params: dict[str, str | None], name: str) -> str:
    """A parameter's value ("" when valueless); names compare case-blind."""
    for key, value in params.items():
        if key.lower() == name.lower():
            return "" if value is None else value
    raise KeyError(name)


def _nth(params: dict[str, str | None], index: int) -> tuple[str, str]:
    name, value = list(params.items())[index]
    return name, "" if value is None else value


def _addressField(address: NameAddr, raw: str, rest: str) -> object:
    """One field of a To, From or Contact value (``rest`` names it)."""
    uri = address.uri
    assert isinstance(uri, SIPURI), uri
    if rest == "uri":
        return str(uri)
    if rest == "display_name":
        return address.displayName or ""
    if rest == "display_name_raw":
        return _rawDisplayName(raw)
    if rest == "tag":
        return address.tag
    if rest in ("user", "uri_user"):
        return unescape(uri.user or "")
    if rest == "user_raw":
        return uri.user
    if rest in ("host", "uri_host"):
        return uri.host
    if rest == "uri_port":
        return uri.port
    m = re.fullmatch(r"uri_param(\d+)_(name|value)(_raw)?", rest)
    if m is not None:
        name, value = _nth(uri.params, int(m.group(1)))
        text = name if m.group(2) == "name" else value
        return text if m.group(3) else unescape(text)
    if rest.startswith("uri_param_"):
        return _param(uri.params, rest[len("uri_param_") :])
    m = re.fullmatch(r"param(\d+)_(name|value)", rest)
    if m is not None:
        return _nth(address.params, int(m.group(1)))[m.group(2) == "value"]
    if rest in ("param_name", "param_value"):
        # The one parameter other than the tag.
        [(pname, pvalue)] = [p for p in address.params.items() if p[0] != "tag"]
        return pname if rest == "param_name" else unquote(pvalue or "")
    if rest.startswith("param_"):
        return _param(address.params, rest[len("param_") :])
    raise AssertionError(f"no accessor for {rest!r}")


def field(message: SIPMessage, data: bytes, key: str, fields: dict[str, Any]) -> object:
    """The value that the message API gives for one key of expected.py."""
    raw = rawHeaders(data)
    if isinstance(message, SIPRequest):
        if key == "request_uri":
            return message.uriText
        if key.startswith("request_uri_"):
            uri = message.uri
            assert isinstance(uri, SIPURI)
            rest = key[len("request_uri_") :]
            if rest == "user":
                return unescape(uri.user or "")
            if rest == "user_raw":
                return uri.user
            if rest == "password":
                return unescape(uri.password or "")
            if rest == "host":
                return uri.host
            if rest.startswith("param_"):
                return _param(uri.params, rest[len("param_") :])
    if isinstance(message, SIPResponse):
        if key == "status_code":
            return message.code
        if key == "reason_phrase":
            return message.phrase
        if key == "reason_phrase_utf8_hex":
            return message.phrase.encode().hex().upper()
        if key == "status_line_raw":
            line = f"{message.version} {message.code} {message.phrase}"
            assert data.split(b"\r\n", 1)[0].decode() == line
            return line
    if key == "sip_version":
        return message.version  # type: ignore[attr-defined]
    m = re.fullmatch(r"(to|from)_(.+)", key)
    if m is not None:
        address = message.toAddr if m.group(1) == "to" else message.fromAddr
        return _addressField(address, raw[m.group(1)][0], m.group(2))
    if key == "contact_count":
        return len(message.contacts)
    if key == "contact_host":
        hosts = {c.uri.host for c in message.contacts if isinstance(c.uri, SIPURI)}
        [host] = hosts
        return host
    m = re.fullmatch(r"contact(\d+)_(.+)", key)
    if m is not None:
        index = int(m.group(1))
        rawContacts = [v for line in raw["contact"] for v in line.split(", ")]
        return _addressField(message.contacts[index], rawContacts[index], m.group(2))
    if key == "via_count":
        return len(message.vias)
    m = re.fullmatch(r"via(\d+)_(.+)", key)
    if m is not None:
        via = message.vias[int(m.group(1))]
        rest = m.group(2)
        if rest.startswith("param_"):
            return _param(via.params, rest[len("param_") :])
        return getattr(via, rest)
    if key == "call_id":
        return message.callId
    if key == "cseq_number":
        return message.cseq.number
    if key == "cseq_method":
        return message.cseq.method
    if key == "max_forwards":
        return message.maxForwards
    if key == "content_length":
        return message.contentLength
    if key == "body_length":
        return len(message.body)
    if key == "content_type":
        return message.header("content-type")
    if key == "content_type_media":
        assert message.contentType is not None
        return message.contentType.value
    if key == "content_type_boundary":
        assert message.contentType is not None
        return message.contentType.params["boundary"]
    if key in ("subject", "date", "user_agent", "content_transfer_encoding"):
        return message.header(key.replace("_", "-"))
    if key == "accept":
        return message.header("accept")
    if key == "accept_count":
        return len(message.mediaTypes("accept"))
    if key == "route_count":
        return len(message.addressList("route"))
    m = re.fullmatch(r"route(\d+)", key)
    if m is not None:
        return message.headerValues("route")[int(m.group(1))]
    if key.startswith("header_") and key != "header_names_as_sent":
        return message.header(key[len("header_") :])
    if key == "header_names_as_sent":
        names = [n.strip().lower() for n in fields[key].split(",")]
        sent = ",".join(COMPACT_FORMS.get(n, n) for n in names)
        assert ",".join(name for name, _ in message.headers) == sent
        return fields[key]
    if key == "extension_header_name":
        assert message.hasHeader(fields[key])
        return fields[key]
    if key == "extension_header_value":
        return message.header(fields["extension_header_name"])
    if key == "datagram_length":
        return len(data)
    if key == "message_length":
        return data.index(b"\r\n\r\n") + 4 + len(message.body)
    if key == "trailing_octets":
        return len(data) - (data.index(b"\r\n\r\n") + 4 + len(message.body))
    if key == "ignored_call_id":
        assert message.callId != fields[key]
        assert all(fields[key] not in value for _, value in message.headers)
        return fields[key]
    if key == "part_count":
        return len(_parts(message))
    m = re.fullmatch(r"part(\d+)_(.+)", key)
    if m is not None:
        headers, body = _parts(message)[int(m.group(1))]
        rest = m.group(2)
        if rest == "body":
            return body.decode()
        if rest == "body_length":
            return len(body)
        if rest == "body_hex":
            return body.hex().upper()
        if rest == "nul_count":
            return body.count(b"\x00")
        return headers[rest.replace("_", "-")]
    raise AssertionError(f"no accessor for {key!r}")


# -- talking to the whole server -----------------------------------------------


def startServer(case: SynchronousTestCase) -> Server:
    """An in-memory server, stopped when the test ends."""
    server = Server()
    case.addCleanup(server.close)
    return server


def answers(server: Server) -> list[tuple[SIPMessage, str, tuple[str, int]]]:
    """Everything the server sent since the last call.

    Datagrams come from the UDP socket; messages for a Via that names TCP go
    over a new connection, which is made here (the in-memory reactor only
    records the attempt) so that they can be read.

    Returns:
        (message, transport, (host, port)) for each message sent.
    """
    out: list[tuple[SIPMessage, str, tuple[str, int]]] = [
        (message, "UDP", address) for message, address in server.sent()
    ]
    clients = server.reactor.tcpClients
    while clients:
        host, port, factory, _, _ = clients.pop(0)
        address = IPv4Address("TCP", host, port)
        protocol = factory.buildProtocol(address)
        assert protocol is not None
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", SERVER[0], 50000), peerAddress=address
        )
        protocol.makeConnection(transport)
        for item in StreamFramer().dataReceived(transport.value()):
            assert isinstance(item, SIPMessage), item
            out.append((item, "TCP", (host, port)))
    return out


def streamAnswers(transport: StringTransport) -> list[SIPMessage]:
    """The messages written on a connection so far."""
    out = []
    for item in StreamFramer().dataReceived(transport.value()):
        assert isinstance(item, SIPMessage), item
        out.append(item)
    return out


def overTCP(data: bytes) -> bytes:
    """The message as a client on a TCP connection would send it.

    RFC 3261 section 18.1.1: the client writes the transport it uses in its
    top Via, and the server answers a TCP Via over the connection (section
    18.2.2). The RFC 4475 messages name UDP; only that word changes.
    """
    return re.sub(
        rb"^((?:Via|v)[ \t]*:[ \t]*SIP/[0-9.]+/)UDP",
        rb"\1TCP",
        data,
        count=1,
        flags=re.IGNORECASE | re.MULTILINE,
    )


class _Checks(SynchronousTestCase):
    """What the torture tests share."""

    def assertAddressed(self, response: SIPMessage, data: bytes) -> None:
        """The response copies what the client needs to match it.

        RFC 3261 section 8.2.6.2: From, Call-ID and CSeq as written, the To
        (a tag may be added), and the Vias, the top one with received and
        rport added (section 18.2.1).
        """
        assert isinstance(response, SIPResponse)
        raw = rawHeaders(data)
        for name in ("from", "call-id", "cseq"):
            self.assertEqual(response.headerLines(name), raw[name], name)
        [to] = response.headerLines("to")
        self.assertTrue(to.startswith(raw["to"][0]), to)
        vias = response.headerLines("via")
        top = raw["via"][0]
        sentBy = re.match(r"SIP\s*/\s*[0-9.]+\s*/\s*\w+\s+[^;,]+", top)
        assert sentBy is not None
        # The top Via is written anew when received is added; compare it
        # without white space.
        self.assertTrue(
            re.sub(r"\s", "", vias[0]).startswith(re.sub(r"\s", "", sentBy.group())),
            vias[0],
        )
        branch = re.search(r";branch=([^;,]+)", top)
        self.assertEqual(
            parseVia(vias[0]).branch, branch.group(1) if branch else None, vias[0]
        )
        rest = raw["via"][1:]
        self.assertEqual(vias[len(vias) - len(rest) :], rest)

    def assertStillServing(self, server: Server) -> None:
        """An OPTIONS after the message still gets its 200 over UDP."""
        server.receive(OPTIONS, SOURCE)
        [(response, transport, _)] = answers(server)
        assert isinstance(response, SIPResponse)
        self.assertEqual((response.code, transport), (200, "UDP"))
        self.assertEqual(response.callId, "after-torture@192.0.2.20")


# -- RFC 4475 section 3.1.1: valid messages ------------------------------------


class ValidParseTests(_Checks):
    """Each valid message parses and gives its fields (RFC 4475 3.1.1)."""

    def check(self, name: str) -> SIPMessage:
        """Parse the message and compare every field expected.py lists."""
        expected = VALID[name]
        data = torture("valid", name)
        message = parseDatagram(data)
        if expected["kind"] == "request":
            assert isinstance(message, SIPRequest), message
            self.assertEqual(message.method, expected["method"])
        else:
            self.assertIsInstance(message, SIPResponse)
        wrong = []
        for key, value in expected["fields"].items():
            try:
                actual = field(message, data, key, expected["fields"])
            except (AssertionError, SIPParseError, KeyError, ValueError) as e:
                wrong.append(f"{key}: {e!r}")
                continue
            if isinstance(value, str) and key.endswith(("_name", "_name_raw")):
                # Parameter names compare case-blind (RFC 3261 7.3.1, 19.1.4).
                actual = str(actual).lower()
                value = value.lower()
            if actual != value:
                wrong.append(f"{key}: {actual!r} != {value!r}")
        self.assertEqual(wrong, [])
        return message

    def test_wsinv(self) -> None:
        """3.1.1.1: folding, odd case and spacing, escapes in quoted strings."""
        self.check("wsinv")

    def test_intmeth(self) -> None:
        """3.1.1.2: every token character, and NUL, BEL, DEL, UTF-8 in quotes."""
        self.check("intmeth")

    def test_esc01(self) -> None:
        """3.1.1.3: %-escapes in SIP URIs unescape once, never recursively."""
        self.check("esc01")

    def test_escnull(self) -> None:
        """3.1.1.4: %00 in a user part unescapes to a NUL."""
        self.check("escnull")

    def test_esc02(self) -> None:
        """3.1.1.5: a % outside a SIP URI is a plain character."""
        self.check("esc02")

    def test_lwsdisp(self) -> None:
        """3.1.1.6: a token display name may touch the "<"."""
        self.check("lwsdisp")

    def test_longreq(self) -> None:
        """3.1.1.7: very long values and 34 Vias parse whole."""
        self.check("longreq")

    def test_dblreq(self) -> None:
        """3.1.1.8: octets past the Content-Length of a datagram are ignored."""
        self.check("dblreq")

    def test_semiuri(self) -> None:
        """3.1.1.9: ";" and an escaped "@" belong to the user part."""
        self.check("semiuri")

    def test_transports(self) -> None:
        """3.1.1.10: UDP, SCTP, TLS, unknown and TCP Vias all parse."""
        self.check("transports")

    def test_mpart01(self) -> None:
        """3.1.1.11: a multipart body with binary octets is kept exactly."""
        self.check("mpart01")

    def test_unreason(self) -> None:
        """3.1.1.12: a UTF-8 reason phrase is decoded whole."""
        self.check("unreason")

    def test_noreason(self) -> None:
        """3.1.1.13: "SIP/2.0 100 " has an empty reason phrase."""
        self.check("noreason")


#: How the server, as a UAS, answers each valid message: the status, or
#: None for a response (never answered).
UAS: dict[str, int | None] = {
    "wsinv": 405,
    "intmeth": 405,
    "esc01": 405,
    "escnull": 200,
    "esc02": 405,
    "lwsdisp": 200,
    "longreq": 405,
    "dblreq": 200,
    "semiuri": 200,
    "transports": 200,
    "mpart01": 405,
    "unreason": None,
    "noreason": None,
}


class ValidServerTests(_Checks):
    """The server answers each valid message as a UAS, never with 400."""

    def check(self, name: str) -> None:
        """Send the datagram; expect the UAS answer, addressed by the Via."""
        data = torture("valid", name)
        server = startServer(self)
        server.receive(data, SOURCE)
        sent = answers(server)
        code = UAS[name]
        if code is None:
            self.assertEqual(sent, [])
            self.assertStillServing(server)
            return
        [(response, transport, (host, _))] = sent
        assert isinstance(response, SIPResponse)
        self.assertEqual(response.code, code, response.phrase)
        self.assertAddressed(response, data)
        # RFC 3261 18.2.2: over the transport the top Via names, to the
        # source address (received).
        top = parseDatagram(data).topVia
        self.assertEqual((transport, host), (top.transport, SOURCE[0]))
        if code == 405:
            allow = [m.strip() for m in (response.header("allow") or "").split(",")]
            self.assertIn("OPTIONS", allow)
            self.assertNotIn(parseDatagram(data).cseq.method, allow)
        self.assertStillServing(server)

    def test_wsinv(self) -> None:
        """3.1.1.1: the tortuous INVITE gets 405 with Allow."""
        self.check("wsinv")

    def test_intmeth(self) -> None:
        """3.1.1.2: the unknown method gets 405, over the TCP its Via names."""
        self.check("intmeth")

    def test_esc01(self) -> None:
        """3.1.1.3: the INVITE with escapes gets 405."""
        self.check("esc01")

    def test_escnull(self) -> None:
        """3.1.1.4: the REGISTER of an AOR holding a NUL gets 200."""
        self.check("escnull")

    def test_esc02(self) -> None:
        """3.1.1.5: RE%47IST%45R is an unknown method, not REGISTER: 405."""
        self.check("esc02")

    def test_lwsdisp(self) -> None:
        """3.1.1.6: the OPTIONS gets 200."""
        self.check("lwsdisp")

    def test_longreq(self) -> None:
        """3.1.1.7: the long INVITE gets 405 with all 34 Vias copied."""
        self.check("longreq")

    def test_dblreq(self) -> None:
        """3.1.1.8: only the REGISTER is answered (200); the noise is not."""
        self.check("dblreq")

    def test_semiuri(self) -> None:
        """3.1.1.9: the OPTIONS gets 200."""
        self.check("semiuri")

    def test_transports(self) -> None:
        """3.1.1.10: the OPTIONS gets 200 over the UDP of its top Via."""
        self.check("transports")

    def test_mpart01(self) -> None:
        """3.1.1.11: the MESSAGE gets 405."""
        self.check("mpart01")

    def test_unreason(self) -> None:
        """3.1.1.12: a response is never answered."""
        self.check("unreason")

    def test_noreason(self) -> None:
        """3.1.1.13: a response is never answered."""
        self.check("noreason")


# -- RFC 4475 section 3.1.2: invalid messages ----------------------------------

#: The outcome this server chooses for each invalid message over UDP; each
#: must be the RFC's outcome or its alternative (checked in every test).
OURS: dict[str, str] = {
    "badinv01": "400",
    "clerr": "400",
    "ncl": "400",
    "scalar02": "400",
    "scalarlg": "drop",
    "quotbal": "400",
    "ltgtruri": "400",
    "lwsruri": "400",
    "lwsstart": "400",
    "trws": "400",
    "escruri": "400",
    "baddate": "accept",
    "regbadct": "400",
    "badaspec": "400",
    "baddn": "400",
    "badvers": "505",
    "mismatch01": "400",
    # RFC 4475 allows 400; the CSeq check comes before the 405 for an
    # unknown method.
    "mismatch02": "400",
    "bigcode": "drop",
}


class InvalidUDPTests(_Checks):
    """Each invalid message gets the RFC 4475 answer over UDP (3.1.2)."""

    def check(self, name: str) -> None:
        """Send the datagram; expect our outcome, then an OPTIONS still works."""
        expected = INVALID[name]
        outcome = OURS[name]
        self.assertIn(outcome, (expected["outcome"], expected["alt_outcome"]))
        data = torture("invalid", name)
        server = startServer(self)
        server.receive(data, SOURCE)
        sent = answers(server)
        if outcome == "drop":
            self.assertEqual(sent, [])
        else:
            [(response, _, (host, _))] = sent
            assert isinstance(response, SIPResponse)
            code = 405 if outcome == "accept" else int(outcome)
            self.assertEqual(response.code, code, response.phrase)
            self.assertEqual(host, SOURCE[0])
            self.assertAddressed(response, data)
        self.assertStillServing(server)

    def test_badinv01(self) -> None:
        """3.1.2.1: empty Via and Contact elements and parameters get 400."""
        self.check("badinv01")

    def test_clerr(self) -> None:
        """3.1.2.2: a Content-Length past the end of the datagram gets 400."""
        self.check("clerr")

    def test_ncl(self) -> None:
        """3.1.2.3: a negative Content-Length gets 400."""
        self.check("ncl")

    def test_scalar02(self) -> None:
        """3.1.2.4: an overlarge CSeq number gets 400 (over its TCP Via)."""
        self.check("scalar02")

    def test_scalarlg(self) -> None:
        """3.1.2.5: a response with overlarge scalars is dropped."""
        self.check("scalarlg")

    def test_quotbal(self) -> None:
        """3.1.2.6: an unterminated quoted display name gets 400."""
        self.check("quotbal")

    def test_ltgtruri(self) -> None:
        """3.1.2.7: a Request-URI in angle brackets gets 400."""
        self.check("ltgtruri")

    def test_lwsruri(self) -> None:
        """3.1.2.8: white space inside the Request-URI gets 400."""
        self.check("lwsruri")

    def test_lwsstart(self) -> None:
        """3.1.2.9: several SPs between request-line elements get 400."""
        self.check("lwsstart")

    def test_trws(self) -> None:
        """3.1.2.10: SPs after the SIP version get 400 (over its TCP Via)."""
        self.check("trws")

    def test_escruri(self) -> None:
        """3.1.2.11: headers in the Request-URI get 400."""
        self.check("escruri")

    def test_baddate(self) -> None:
        """3.1.2.12: a Date in EST is ignored; the INVITE is processed (405)."""
        self.check("baddate")

    def test_regbadct(self) -> None:
        """3.1.2.13: a Contact URI with "?" outside angle brackets gets 400."""
        self.check("regbadct")

    def test_badaspec(self) -> None:
        """3.1.2.14: spaces inside the angle brackets of an address get 400."""
        self.check("badaspec")

    def test_baddn(self) -> None:
        """3.1.2.15: unquoted "," and "." in display names get 400."""
        self.check("baddn")

    def test_badvers(self) -> None:
        """3.1.2.16: SIP/7.0 gets 505 Version Not Supported."""
        self.check("badvers")

    def test_mismatch01(self) -> None:
        """3.1.2.17: a CSeq method other than the request's gets 400."""
        self.check("mismatch01")

    def test_mismatch02(self) -> None:
        """3.1.2.18: an unknown method with a mismatched CSeq gets 400."""
        self.check("mismatch02")

    def test_bigcode(self) -> None:
        """3.1.2.19: a response with a status code over 699 is dropped."""
        self.check("bigcode")


#: What the server does with each invalid message on a TCP connection (sent
#: with a TCP top Via): the status it writes back on the connection, or None
#: for nothing, and whether it then closes the connection. A message the
#: stream cannot parse (start line, Content-Length, top Via) breaks the
#: framing: 400 when the request line was readable, then the connection is
#: closed. A message that frames correctly but whose headers are malformed
#: is answered like any other request, and the connection goes on.
STREAM: dict[str, tuple[int | None, bool]] = {
    "badinv01": (400, True),
    # On a stream a Content-Length past the end is an incomplete message.
    "clerr": (None, False),
    "ncl": (400, True),
    "scalar02": (400, False),
    "scalarlg": (None, False),
    "quotbal": (400, False),
    "ltgtruri": (400, True),
    "lwsruri": (400, True),
    "lwsstart": (400, True),
    "trws": (400, True),
    "escruri": (400, False),
    "baddate": (405, False),
    "regbadct": (400, False),
    "badaspec": (400, False),
    # The file ends after "l: 0" CRLF: on a stream the head is incomplete.
    "baddn": (None, False),
    "badvers": (505, True),
    "mismatch01": (400, False),
    "mismatch02": (400, False),
    "bigcode": (None, True),
}


class InvalidTCPTests(_Checks):
    """Each invalid message over a TCP connection (RFC 4475 3.1.2)."""

    def connect(
        self, data: bytes, bytewise: bool
    ) -> tuple[Server, Any, StringTransport]:
        """Send ``data`` on a new connection, at once or one byte at a time."""
        server = startServer(self)
        protocol, transport = server.tcp()
        if bytewise:
            for i in range(len(data)):
                protocol.dataReceived(data[i : i + 1])
        else:
            protocol.dataReceived(data)
        return server, protocol, transport

    def check(self, name: str) -> list[tuple[Server, Any, StringTransport]]:
        """Send the message both ways; expect what `STREAM` says.

        Returns:
            The server, protocol and transport of each way, for more checks.
        """
        code, closed = STREAM[name]
        data = overTCP(torture("invalid", name))
        out = []
        for bytewise in (False, True):
            server, protocol, transport = self.connect(data, bytewise)
            sent = streamAnswers(transport)
            self.assertEqual(answers(server), [], "nothing goes elsewhere")
            if code is None:
                self.assertEqual(sent, [])
            else:
                [response] = sent
                assert isinstance(response, SIPResponse)
                self.assertEqual(response.code, code, response.phrase)
                self.assertAddressed(response, data)
            self.assertEqual(transport.disconnecting, closed)
            if closed:
                self.assertFalse(protocol.connected)
            elif STREAM[name][0] is not None or name == "scalarlg":
                # The framing held: the next request on the connection works.
                transport.clear()
                protocol.dataReceived(_optionsOverTCP())
                [response] = streamAnswers(transport)
                assert isinstance(response, SIPResponse)
                self.assertEqual(response.code, 200)
                transport.clear()
            self.assertStillServing(server)
            out.append((server, protocol, transport))
        return out

    def test_badinv01(self) -> None:
        """3.1.2.1: a malformed top Via breaks the stream: 400, then closed."""
        self.check("badinv01")

    def test_clerr(self) -> None:
        """3.1.2.2: on a stream the message is only incomplete (no 400).

        The connection waits for the 9999 octets: it closes when they have
        not all come within tcp_read_timeout, and once they arrive the
        INVITE is answered (405).
        """
        [(server, protocol, transport), _] = self.check("clerr")
        body = torture("invalid", "clerr").split(b"\r\n\r\n", 1)[1]
        self.assertEqual(protocol.framer.buffered, len(body))
        server.advance(server.config.tcpReadTimeout - 1)
        self.assertFalse(transport.disconnecting)
        server.advance(1)
        self.assertTrue(transport.disconnecting)
        assert server.stack.limits is not None
        self.assertEqual(server.stack.limits.readTimeouts, 1)

        server = startServer(self)
        protocol, transport = server.tcp()
        protocol.dataReceived(overTCP(torture("invalid", "clerr")))
        protocol.dataReceived(b"x" * (9999 - len(body)))
        [response] = streamAnswers(transport)
        assert isinstance(response, SIPResponse)
        self.assertEqual(response.code, 405)
        self.assertFalse(transport.disconnecting)

    def test_ncl(self) -> None:
        """3.1.2.3: a negative Content-Length breaks the stream: 400, closed."""
        self.check("ncl")

    def test_scalar02(self) -> None:
        """3.1.2.4: an overlarge CSeq gets 400; the connection goes on."""
        self.check("scalar02")

    def test_scalarlg(self) -> None:
        """3.1.2.5: a response with overlarge scalars is dropped, not answered."""
        self.check("scalarlg")

    def test_quotbal(self) -> None:
        """3.1.2.6: an unterminated quoted string gets 400; the stream goes on."""
        self.check("quotbal")

    def test_ltgtruri(self) -> None:
        """3.1.2.7: a Request-URI in angle brackets: 400, then closed."""
        self.check("ltgtruri")

    def test_lwsruri(self) -> None:
        """3.1.2.8: white space in the Request-URI: 400, then closed."""
        self.check("lwsruri")

    def test_lwsstart(self) -> None:
        """3.1.2.9: several SPs in the request line: 400, then closed."""
        self.check("lwsstart")

    def test_trws(self) -> None:
        """3.1.2.10: SPs after the version: 400, then closed."""
        self.check("trws")

    def test_escruri(self) -> None:
        """3.1.2.11: headers in the Request-URI get 400; the stream goes on."""
        self.check("escruri")

    def test_baddate(self) -> None:
        """3.1.2.12: the bad Date is ignored and the INVITE gets 405."""
        self.check("baddate")

    def test_regbadct(self) -> None:
        """3.1.2.13: a Contact with "?" and no brackets gets 400."""
        self.check("regbadct")

    def test_badaspec(self) -> None:
        """3.1.2.14: spaces within the addr-spec get 400."""
        self.check("badaspec")

    def test_baddn(self) -> None:
        """3.1.2.15: without its empty line the head waits; then it gets 400."""
        for _, protocol, transport in self.check("baddn"):
            protocol.dataReceived(b"\r\n")
            [response] = streamAnswers(transport)
            assert isinstance(response, SIPResponse)
            self.assertEqual(response.code, 400)
            self.assertFalse(transport.disconnecting)

    def test_badvers(self) -> None:
        """3.1.2.16: SIP/7.0 gets 505, then the connection is closed."""
        self.check("badvers")

    def test_mismatch01(self) -> None:
        """3.1.2.17: a mismatched CSeq method gets 400; the stream goes on."""
        self.check("mismatch01")

    def test_mismatch02(self) -> None:
        """3.1.2.18: an unknown method with a mismatched CSeq gets 400."""
        self.check("mismatch02")

    def test_bigcode(self) -> None:
        """3.1.2.19: an unreadable status line: nothing sent, stream closed."""
        self.check("bigcode")
