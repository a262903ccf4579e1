"""Tests for presence.admin.xmlrpc: arguments, cursors, entries, faults."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.xmlrpc import Fault

from presence.admin import xmlrpc as admin
from presence.admin.xmlrpc import (
    AdminXMLRPC,
    arguments,
    decodeCursor,
    encodeCursor,
    intArgument,
    presentityURI,
    publicationEntry,
    subscriptionEntry,
)
from presence.storage.errors import StorageError
from presence.storage.records import Publication, Subscription
from presence.testing import Server


class ArgumentTests(SynchronousTestCase):
    """Arguments by position or by name, and their checks."""

    def test_positionalOrNamed(self) -> None:
        """Arguments come by position, or as one struct of names."""
        names = ("presentity", "event", "cursor", "limit")
        self.assertEqual(
            arguments("m", ("a", "b"), names), {"presentity": "a", "event": "b"}
        )
        self.assertEqual(arguments("m", ({"limit": 5},), names), {"limit": 5})
        with self.assertRaises(Fault) as caught:
            arguments("m", (1, 2, 3, 4, 5), names)
        self.assertEqual(caught.exception.faultCode, 400)
        with self.assertRaises(Fault):
            arguments("m", ({"bogus": 1},), names)

    def test_integers(self) -> None:
        """An integer may come as a numeric string; anything else is refused."""
        self.assertEqual(intArgument("m", "limit", None, 10), 10)
        self.assertEqual(intArgument("m", "limit", "", 10), 10)
        self.assertEqual(intArgument("m", "limit", " 7 ", 10), 7)
        self.assertEqual(intArgument("m", "limit", -3, 10), -3)
        for bad in ["x", "1.5", True, 2.0, []]:
            with self.assertRaises(Fault):
                intArgument("m", "limit", bad, 10)

    def test_presentityURI(self) -> None:
        """A presentity is normalised as the core stores it."""
        for text in ["bob@Example.COM", "sip:bob@example.com", "sip:%62ob@example.com"]:
            self.assertEqual(presentityURI("m", text), "sip:bob@example.com")
        for bad in ["example.com", "sip:", "tel:+123", "sip:bob@"]:
            with self.assertRaises(Fault, msg=bad):
                presentityURI("m", bad)

    def test_cursor(self) -> None:
        """A cursor carries the store's key and the listing it came from."""
        key = ("call-\u00e9", "a", "b", "presence", "")
        cursor = encodeCursor("s", key)
        self.assertNotIn("=", cursor)
        self.assertEqual(decodeCursor("m", "s", cursor), key)
        self.assertEqual(encodeCursor("s", None), "")
        self.assertIsNone(decodeCursor("m", "s", ""))
        for bad in [cursor[:-3], "!!", encodeCursor("w", ("a", "b", "c", "d"))]:
            with self.assertRaises(Fault):
                decodeCursor("m", "s", bad)


class EntryTests(SynchronousTestCase):
    """Rows as entries XML-RPC can carry."""

    def test_publication(self) -> None:
        """A publication: the URI, whole seconds, no None."""
        entry = publicationEntry(
            Publication("bob@example.com", "presence", "e1", 100.2, 50.7, b"x")
        )
        self.assertEqual(
            entry,
            {
                "presentity": "sip:bob@example.com",
                "event": "presence",
                "etag": "e1",
                "expires": 101,
                "received": 50,
                "content_type": "",
                "sender": "",
            },
        )

    def test_subscriptionTextAndNumbers(self) -> None:
        """Characters XML cannot carry are replaced; big numbers become doubles."""
        subscription = Subscription(
            "sip:bob@example.com",
            "presence",
            "",
            "c\x01id",
            "t",
            "f",
            "alice",
            "example.com",
            "bob",
            "example.com",
            2**31,
            1,
            "sip:a@192.0.2.1",
            "",
            2**40,
            socketInfo="tcp:192.0.2.1:5060",
            sharingTag="node-1",
        )
        entry = subscriptionEntry(subscription)
        self.assertEqual(entry["callid"], "c\ufffdid")
        self.assertEqual(entry["local_cseq"], 2.0**31)
        self.assertIsInstance(entry["expires"], float)
        self.assertEqual(entry["transport"], "TCP")
        self.assertEqual(entry["owner"], "node-1")
        self.assertEqual(entry["watcher"], "sip:alice@example.com")


class BrokenStore:
    """A store whose every listing fails."""

    async def listSubscriptions(self, **kw: Any) -> Any:
        """Fail."""
        raise StorageError("connection refused")


class ResourceTests(SynchronousTestCase):
    """The methods, called as the XML-RPC resource calls them."""

    def setUp(self) -> None:
        """A server in memory and its XML-RPC resource."""
        self.server = Server()
        self.addCleanup(self.server.close)
        stack = self.server.stack
        self.rpc = AdminXMLRPC(
            stack.store, stack.notifier, stack.packages, stack.statistics
        )

    def test_storeUnavailable(self) -> None:
        """A store that cannot be read answers fault 503."""
        self.rpc.store = BrokenStore()  # type: ignore[assignment]
        result = self.successResultOf(self.rpc.xmlrpc_subs_phtable_list())
        self.assertIsInstance(result, Fault)
        self.assertEqual(result.faultCode, 503)
        self.assertIn("connection refused", result.faultString)

    def test_introspection(self) -> None:
        """system.listMethods names every method."""
        methods = self.rpc.getSubHandler("system").xmlrpc_listMethods()
        for name in [
            "pres_phtable_list",
            "subs_phtable_list",
            "pres_watchers_list",
            "get_statistics",
            "refreshWatchers",
        ]:
            self.assertIn(name, methods)

    def test_limits(self) -> None:
        """The default page is the largest."""
        self.assertEqual(admin.DEFAULT_LIMIT, admin.MAX_LIMIT)


class RefreshStateTests(SynchronousTestCase):
    """refreshWatchers of a type other than 0 with pidf-manipulation on."""

    def setUp(self) -> None:
        """A resource whose re-authorise and refresh calls are recorded."""
        self.server = Server()
        self.addCleanup(self.server.close)
        stack = self.server.stack
        self.calls: list[tuple[str, str, str]] = []

        async def reauthorise(presentity: str, event: str) -> tuple[int, int]:
            self.calls.append(("reauthorise", presentity, event))
            return 3, 1

        async def refreshState(presentity: str, event: str) -> tuple[int, int]:
            self.calls.append(("refreshState", presentity, event))
            return 2, 0

        self.rpc = AdminXMLRPC(
            stack.store,
            stack.notifier,
            stack.packages,
            stack.statistics,
            reauthorise,
            refreshState=refreshState,
        )

    def test_typeOneRefreshesTheState(self) -> None:
        """Type 1 (and "1", and 2): the state is read again and notified.

        OpenSIPS's refreshWatchers type 1: "the published state changed",
        so the hard state (pidf-manipulation) is read again before every
        watcher is notified; type 0 stays the re-authorisation.
        """
        bob = "sip:bob@example.com"
        for kind in (1, "1", 2):
            answer = self.successResultOf(
                self.rpc.xmlrpc_refreshWatchers(bob, "presence", kind)
            )
            self.assertEqual((answer["subscriptions"], answer["changed"]), (2, 0))
        answer = self.successResultOf(
            self.rpc.xmlrpc_refreshWatchers(bob, "presence", 0)
        )
        self.assertEqual((answer["subscriptions"], answer["changed"]), (3, 1))
        self.assertEqual(
            self.calls,
            [("refreshState", bob, "presence")] * 3
            + [("reauthorise", bob, "presence")],
        )
