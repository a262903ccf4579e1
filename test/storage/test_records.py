"""The subscription record's derived text fields read back as they were given."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from presence.storage.records import Subscription


def _subscription(**changes: Any) -> Subscription:
    fields: dict[str, Any] = {
        "presentity": "sip:bob@example.com",
        "event": "presence",
        "eventId": "",
        "callId": "c1@host",
        "toTag": "ours",
        "fromTag": "theirs",
        "watcherUsername": "alice",
        "watcherDomain": "example.com",
        "toUser": "bob",
        "toDomain": "example.com",
        "localCSeq": 0,
        "remoteCSeq": 1,
        "contact": "sip:alice@192.0.2.1",
        "recordRoute": "",
        "expires": 100.0,
        "watcherURI": "sip:alice@example.com",
        "fromHeader": "<sip:alice@example.com>;tag=theirs",
        "toHeader": "<sip:bob@example.com>;tag=ours",
    }
    fields.update(changes)
    return Subscription(**fields)


class DerivedFieldTests(SynchronousTestCase):
    """``watcherURI``, ``fromHeader`` and ``toHeader`` are kept only when they differ.

    RFC 3261 section 12.2.1.1: "The URI in the To field of the request MUST
    be set to the remote URI from the dialog state.  The tag in the To header
    field of the request MUST be set to the remote tag of the dialog ID.  The
    From URI of the request MUST be set to the local URI from the dialog
    state.  The tag in the From header field MUST be set to the local tag of
    the dialog ID."  What the record answers is the text given, derived or
    not.
    """

    def test_derivable(self) -> None:
        """Text the other fields make is answered as given, and not stored."""
        s = _subscription()
        self.assertEqual(s.watcherURI, "sip:alice@example.com")
        self.assertEqual(s.fromHeader, "<sip:alice@example.com>;tag=theirs")
        self.assertEqual(s.toHeader, "<sip:bob@example.com>;tag=ours")
        slot = Subscription.__dict__["__slots__"]
        self.assertIn("fromHeader", slot)
        for name in ("watcherURI", "fromHeader", "toHeader"):
            descriptor = Subscription.__mro__[0].__dict__[name]
            self.assertIsInstance(descriptor, property)

    def test_displayName(self) -> None:
        """A From with the display name the record keeps is derived too."""
        s = _subscription(
            watcherDisplayName="Alice",
            fromHeader='"Alice" <sip:alice@example.com>;tag=theirs',
        )
        self.assertEqual(s.fromHeader, '"Alice" <sip:alice@example.com>;tag=theirs')

    def test_different(self) -> None:
        """Text as an unusual client wrote it is kept as it is."""
        s = _subscription(
            watcherURI="sips:Alice@Example.COM;x=1",
            fromHeader="Alice <sips:Alice@Example.COM;x=1>;tag=theirs;p=q",
            toHeader="<sip:BOB@example.com>;tag=ours",
        )
        self.assertEqual(s.watcherURI, "sips:Alice@Example.COM;x=1")
        self.assertEqual(
            s.fromHeader, "Alice <sips:Alice@Example.COM;x=1>;tag=theirs;p=q"
        )
        self.assertEqual(s.toHeader, "<sip:BOB@example.com>;tag=ours")

    def test_empty(self) -> None:
        """An empty field (a row another server wrote) stays empty."""
        s = _subscription(watcherURI="", fromHeader="", toHeader="")
        self.assertEqual((s.watcherURI, s.fromHeader, s.toHeader), ("", "", ""))
        self.assertEqual(s.copy(), s)

    def test_defaults(self) -> None:
        """Left out, the fields are empty, as before."""
        s = Subscription(
            "sip:bob@example.com",
            "presence",
            "",
            "c",
            "t",
            "f",
            "alice",
            "example.com",
            "bob",
            "example.com",
            0,
            0,
            "sip:a@h",
            "",
            1.0,
        )
        self.assertEqual((s.watcherURI, s.fromHeader, s.toHeader), ("", "", ""))

    def test_copyAndReplace(self) -> None:
        """A copy, and a copy with changes, answer the same text."""
        s = _subscription(toHeader="<sip:BOB@example.com>;tag=ours")
        self.assertEqual(s.copy(), s)
        changed = s.copy(localCSeq=5)
        self.assertEqual(changed.localCSeq, 5)
        self.assertEqual(changed.toHeader, "<sip:BOB@example.com>;tag=ours")
        self.assertEqual(changed.fromHeader, s.fromHeader)
        # A change of what a derived field comes from keeps the text given.
        moved = s.copy(fromTag="other")
        self.assertEqual(moved.fromHeader, "<sip:alice@example.com>;tag=theirs")
