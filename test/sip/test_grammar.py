"""Tests for `presence.sip.grammar`: lists, parameters, quoting."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from presence.sip.errors import SIPParseError
from presence.sip.grammar import firstElement, parseParams, quote, splitList, unquote


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

    def test_firstElement(self) -> None:
        """The first element of a list, commas in quotes and brackets ignored."""
        self.assertEqual(firstElement(" a , b"), "a")
        self.assertEqual(firstElement('"x, y" <sip:a@b>, c'), '"x, y" <sip:a@b>')
        self.assertEqual(firstElement("<sip:a@b;p=1,2>, c"), "<sip:a@b;p=1,2>")
        self.assertEqual(firstElement("single"), "single")


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

    def test_quoting(self) -> None:
        """Quoting and unquoting are inverse."""
        for text in ("plain", 'with "quotes"', "back\\slash", ""):
            self.assertEqual(unquote(quote(text)), text)
