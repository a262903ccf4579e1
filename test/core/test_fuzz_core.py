"""Property tests: junk in PUBLISH and SUBSCRIBE never makes the server fail.

No 500, no unexpected error logged, and it keeps serving.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from presence.sip.message import SIPResponse
from presence.testing import UA, Server, Subscriber, pidf

HEADERS = [
    "Event",
    "Expires",
    "Accept",
    "Contact",
    "From",
    "To",
    "CSeq",
    "Call-ID",
    "Via",
    "Max-Forwards",
    "Content-Type",
    "SIP-If-Match",
    "Record-Route",
    "Require",
]

# Header values: printable text without line breaks, biased to SIP's
# punctuation.
values = st.lists(
    st.sampled_from(
        [*"abcz019 ;,=<>\"'@:./?-_*%\\t[]", "sip:", "tag=", "id=", "presence"]
    ),
    max_size=20,
).map("".join)


class FuzzTests(SynchronousTestCase):
    """The whole server, fed requests with one header replaced by junk."""

    def setUp(self) -> None:
        """One server for all examples; each example checks it still serves."""
        self.server = Server()
        self.addCleanup(self.server.close)
        self.ua = UA(self.server, "alice", "192.0.2.20", 5070)

    def check(self, method: str, name: str, value: str, body: bytes) -> None:
        """Send the request with ``name`` replaced; check the answer and health."""
        headers = [("Event", "presence"), ("Expires", "600")]
        if body:
            headers.append(("Content-Type", "application/pidf+xml"))
        data = self.ua.request(method, "sip:bob@example.com", headers, body)
        lines = data.split(b"\r\n")
        replaced = False
        for i, line in enumerate(lines):
            if line.lower().startswith(name.lower().encode() + b":"):
                lines[i] = f"{name}: {value}".encode()
                replaced = True
        if not replaced:
            lines.insert(1, f"{name}: {value}".encode())
        self.ua.send(b"\r\n".join(lines))
        for message in self.ua.received():
            if isinstance(message, SIPResponse):
                self.assertNotEqual(message.code, 500, (name, value))
        self.assertEqual(self.flushLoggedErrors(), [])
        self.ua.send(self.ua.request("OPTIONS", "sip:bob@example.com"))
        [pong] = [m for m in self.ua.received() if isinstance(m, SIPResponse)]
        self.assertEqual(pong.code, 200)

    @settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
    @given(st.sampled_from(HEADERS), values)
    def test_subscribe(self, name: str, value: str) -> None:
        """A SUBSCRIBE with any one header replaced is answered, never 500."""
        self.check("SUBSCRIBE", name, value, b"")

    @settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
    @given(st.sampled_from(HEADERS), values)
    def test_publish(self, name: str, value: str) -> None:
        """A PUBLISH with any one header replaced is answered, never 500."""
        self.check("PUBLISH", name, value, pidf())

    @settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
    @given(st.binary(max_size=300))
    def test_publishBody(self, body: bytes) -> None:
        """A PUBLISH with any body is answered, never 500."""
        self.check("PUBLISH", "Event", "presence", body)

    @settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
    @given(st.sampled_from([*HEADERS, "Contact"]), values)
    def test_register(self, name: str, value: str) -> None:
        """A REGISTER with any one header replaced is answered, never 500."""
        self.check("REGISTER", name, value, b"")

    @settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
    @given(st.sampled_from(HEADERS), values)
    def test_refresh(self, name: str, value: str) -> None:
        """A SUBSCRIBE inside a dialog, with one header replaced, never gets 500."""
        subscriber = Subscriber(self.server, "carol", "192.0.2.22", 5072)
        if subscriber.subscribe("sip:bob@example.com").code != 200:
            return
        for notify in subscriber.notifies():
            subscriber.answer(notify)
        data = subscriber.request(
            "SUBSCRIBE",
            "sip:bob@example.com",
            [("Event", "presence"), ("Expires", "600")],
            callId=subscriber.callId,
            toTag=subscriber.toTag,
        )
        lines = data.split(b"\r\n")
        for i, line in enumerate(lines):
            if line.lower().startswith(name.lower().encode() + b":"):
                lines[i] = f"{name}: {value}".encode()
        subscriber.send(b"\r\n".join(lines))
        for message in subscriber.received():
            if isinstance(message, SIPResponse):
                self.assertNotEqual(message.code, 500, (name, value))
        self.assertEqual(self.flushLoggedErrors(), [])
