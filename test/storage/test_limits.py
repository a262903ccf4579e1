"""Tests for `presence.storage.limits`: column widths from the schema."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from presence.storage.limits import WIDTHS, columnWidths, oversized
from presence.testing import UA, Server, Subscriber, pidf


class WidthTests(SynchronousTestCase):
    """The widths are the PostgreSQL schema's own."""

    def test_fromSchema(self) -> None:
        """OpenSIPS's widths: callid 255, usernames 64, the etag 128."""
        self.assertEqual(WIDTHS["active_watchers"]["callid"], 255)
        self.assertEqual(WIDTHS["presentity"]["username"], 64)
        self.assertEqual(WIDTHS["presentity"]["etag"], 128)
        self.assertEqual(WIDTHS["location"]["user_agent"], 255)

    def test_parse(self) -> None:
        """Only VARCHAR columns have a width; comments are ignored."""
        script = (
            "-- a comment; with a semicolon\n"
            "CREATE TABLE IF NOT EXISTS t (\n"
            "    id SERIAL PRIMARY KEY,\n"
            "    name VARCHAR(10) NOT NULL, -- ours\n"
            "    body BYTEA\n"
            ");\n"
        )
        self.assertEqual(columnWidths(script), {"t": {"name": 10}})

    def test_oversized(self) -> None:
        """The first value over its width is named; other values are ignored."""
        self.assertIsNone(oversized("presentity", {"username": "x" * 64}))
        self.assertEqual(
            oversized("presentity", {"username": "x" * 65, "body": b"y" * 999}),
            "username longer than 64 characters",
        )
        self.assertIsNone(oversized("nothing", {"username": "x" * 999}))


class RequestTests(SynchronousTestCase):
    """A request whose values do not fit is refused with 400, in every mode."""

    def setUp(self) -> None:
        """An in-memory server."""
        self.server = Server()
        self.addCleanup(self.server.close)

    def test_subscribeCallIdTooLong(self) -> None:
        """A Call-ID longer than ``active_watchers.callid``: 400, nothing kept."""
        alice = Subscriber(self.server, "alice", "192.0.2.20", 5070)
        alice.send(
            alice.request(
                "SUBSCRIBE",
                "sip:bob@example.com",
                [("Event", "presence"), ("Expires", "600")],
                callId="c" * 256,
            )
        )
        response = alice.response()
        self.assertEqual(
            (response.code, response.phrase),
            (400, "callid longer than 255 characters"),
        )
        self.assertEqual(alice.notifies(), [])

    def test_publishUserTooLong(self) -> None:
        """A presentity user longer than ``presentity.username``: 400."""
        long = UA(self.server, "u" * 65, "192.0.2.21", 5071)
        self.assertEqual(long.publish(pidf()).code, 400)

    def test_registerUserAgentTooLong(self) -> None:
        """A User-Agent longer than ``location.user_agent``: 400, no binding."""
        bob = UA(self.server, "bob", "192.0.2.21", 5071)
        bob.send(
            bob.request(
                "REGISTER",
                "sip:example.com",
                [("Expires", "600"), ("User-Agent", "p" * 256)],
                to=f"<{bob.aor}>",
            )
        )
        self.assertEqual(bob.response().code, 400)
