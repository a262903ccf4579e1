"""The message-summary package (RFC 3842) alone and through the whole server."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from presence.packages.interfaces import IEventPackage
from presence.packages.mwi import (
    MWI_TYPE,
    MessageCounts,
    MessageSummaryPackage,
    parseSummary,
)
from presence.sip.errors import BadRequest
from presence.sip.message import SIPRequest
from presence.testing import UA, Server, Subscriber

#: The example of RFC 3842 section 5.2 (with urgent counts).
SUMMARY = (
    b"Messages-Waiting: yes\r\n"
    b"Message-Account: sip:bob@vmail.example.com\r\n"
    b"Voice-Message: 2/8 (0/2)\r\n"
)

NO_MESSAGES = b"Messages-Waiting: no\r\nMessage-Account: sip:bob@example.com\r\n"


class SummaryGrammarTests(SynchronousTestCase):
    """parseSummary against the grammar of RFC 3842 section 5.2."""

    def test_example(self) -> None:
        """RFC 3842 5.2: status, account and a class line with urgent counts."""
        summary = parseSummary(SUMMARY)
        self.assertTrue(summary.waiting)
        self.assertEqual(summary.account, "sip:bob@vmail.example.com")
        self.assertEqual(summary.counts, {"voice-message": MessageCounts(2, 8, 0, 2)})
        self.assertEqual(summary.headers, [])

    def test_statusOnly(self) -> None:
        """RFC 3842 5.2: Messages-Waiting alone is a whole summary."""
        summary = parseSummary(b"Messages-Waiting: no\r\n")
        self.assertFalse(summary.waiting)
        self.assertIsNone(summary.account)
        self.assertEqual(summary.counts, {})

    def test_caseAndLineEndings(self) -> None:
        """RFC 3842 5.2 / RFC 3261 7.3.1: names are case-insensitive; LF ends lines."""
        summary = parseSummary(
            b"messages-waiting:YES\nMESSAGE-ACCOUNT :  sip:bob@example.com\n"
            b"fax-message: 1/0\nVOICE-MESSAGE:3 / 4 ( 1 / 0 )"
        )
        self.assertTrue(summary.waiting)
        self.assertEqual(summary.account, "sip:bob@example.com")
        self.assertEqual(
            summary.counts,
            {
                "fax-message": MessageCounts(1, 0),
                "voice-message": MessageCounts(3, 4, 1, 0),
            },
        )

    def test_everyClass(self) -> None:
        """RFC 3842 5.2 / RFC 3458 3.2: every message-context-class is accepted."""
        classes = [
            "Voice-Message",
            "Fax-Message",
            "Pager-Message",
            "Multimedia-Message",
            "Text-Message",
            "None",
        ]
        body = "Messages-Waiting: yes\r\n" + "".join(f"{c}: 1/1\r\n" for c in classes)
        summary = parseSummary(body.encode())
        self.assertEqual(sorted(summary.counts), sorted(c.lower() for c in classes))

    def test_extensionHeaders(self) -> None:
        """RFC 3842 5.2: groups of extension headers follow blank lines."""
        summary = parseSummary(
            SUMMARY + b"\r\nTo: <sip:bob@example.com>\r\nSubject: carpool\r\n"
            b" tomorrow?\r\n\r\nMessage-ID: 1378@vmail.example.com\r\n\r\n"
        )
        self.assertEqual(
            summary.headers,
            [
                ("To", "<sip:bob@example.com>"),
                ("Subject", "carpool tomorrow?"),
                ("Message-ID", "1378@vmail.example.com"),
            ],
        )

    def test_malformed(self) -> None:
        """RFC 3842 5.2: a body off the grammar raises BadRequest saying why."""
        cases = {
            b"": "empty",
            b"\r\nMessages-Waiting: yes\r\n": "start with Messages-Waiting",
            b"Voice-Message: 1/2\r\n": "start with Messages-Waiting",
            b"Messages-Waiting: maybe\r\n": "yes or no",
            b"Messages-Waiting yes\r\n": "start with Messages-Waiting",
            b"Messages-Waiting: yes\r\nMessages-Waiting: no\r\n": "twice",
            b"Messages-Waiting: yes\r\nMessage-Account: bob\r\n": "URI",
            b"Messages-Waiting: yes\r\nVoice-Message: 1/2\r\n"
            b"Message-Account: sip:bob@example.com\r\n": "follow Messages-Waiting",
            b"Messages-Waiting: yes\r\nVideo-Message: 1/2\r\n": "video-message",
            b"Messages-Waiting: yes\r\nVoice-Message: 1\r\n": "counts",
            b"Messages-Waiting: yes\r\nVoice-Message: 1/2 (1)\r\n": "counts",
            b"Messages-Waiting: yes\r\nVoice-Message: a/b\r\n": "counts",
            b"Messages-Waiting: yes\r\nVoice-Message: 1/2\r\n"
            b"voice-message: 3/4\r\n": "twice",
            b"Messages-Waiting: yes\r\nVoice-Message: 4294967296/0\r\n": "too large",
            b"Messages-Waiting: yes\r\nhello\r\n": "malformed",
            b"Messages-Waiting: yes\r\n\r\nnot a header\r\n": "header",
            b"Messages-Waiting: yes\rVoice-Message: 1/2\r\n": "CR",
            b"Messages-Waiting: yes\r\n\xff\r\n": "UTF-8",
        }
        for body, why in cases.items():
            error = self.assertRaises(BadRequest, parseSummary, body)
            self.assertIn(why, error.reason, repr(body))

    def test_largestCount(self) -> None:
        """RFC 3842 5.2: a msgcount may be as large as 2^32-1."""
        summary = parseSummary(b"Messages-Waiting: yes\nVoice-Message: 4294967295/0\n")
        self.assertEqual(summary.counts["voice-message"].new, 2**32 - 1)


class MessageSummaryPackageTests(SynchronousTestCase):
    """The package object itself."""

    def test_interface(self) -> None:
        """MessageSummaryPackage provides IEventPackage."""
        self.assertTrue(verifyObject(IEventPackage, MessageSummaryPackage()))

    def test_attributes(self) -> None:
        """RFC 3842 3.1 / 3.5: the event, its type, PUBLISH accepted, owner-only."""
        package = MessageSummaryPackage()
        self.assertEqual(package.name, "message-summary")
        self.assertEqual(package.acceptTypes, [MWI_TYPE])
        self.assertEqual(package.notifyTypes, [MWI_TYPE])
        self.assertTrue(package.acceptsPublish)
        self.assertFalse(package.needsAuthorisation)
        self.assertTrue(package.ownerOnly)
        self.assertIsNone(package.watcherInfo)

    def test_validateChecksTheBody(self) -> None:
        """RFC 3842 5.2: validate parses the summary; the media type is the core's.

        The core answers 415 to another Content-Type before it calls validate
        (see ``test_wrongType``), so validate checks the body alone: a summary
        passes, one off the grammar raises BadRequest saying why.
        """
        package = MessageSummaryPackage()
        package.validate(SUMMARY, MWI_TYPE)
        error = self.assertRaises(
            BadRequest, package.validate, b"Voice-Message: 1/2\r\n", MWI_TYPE
        )
        self.assertIn("Messages-Waiting", error.reason)


class MessageSummaryServerTests(SynchronousTestCase):
    """message-summary through the whole server over in-memory transports.

    A voicemail server publishes bob's mailbox; bob's phone subscribes to it.
    """

    def setUp(self) -> None:
        """Start a server with the package, the voicemail server and bob."""
        self.server = Server()
        self.addCleanup(self.server.close)
        self.server.register(MessageSummaryPackage())
        self.vmail = UA(self.server, "vmail", "192.0.2.40", 5080)
        self.bob = Subscriber(self.server, "bob", "192.0.2.21", 5071)

    def publish(self, body: bytes | None, **kw: object) -> str:
        """The voicemail server publishes bob's mailbox; return the SIP-ETag."""
        response = self.vmail.publish(
            body,
            event="message-summary",
            contentType=MWI_TYPE,
            presentity="sip:bob@example.com",
            **kw,  # type: ignore[arg-type]
        )
        self.assertEqual(response.code, 200, response.phrase)
        return response.header("sip-etag") or ""

    def subscribed(self) -> SIPRequest:
        """Bob subscribes to his mailbox; answer and return the first NOTIFY."""
        response = self.bob.subscribe("sip:bob@example.com", event="message-summary")
        self.assertEqual(response.code, 200, response.phrase)
        [notify] = self.bob.notifies()
        self.bob.answer(notify)
        return notify

    def nextNotify(self) -> SIPRequest:
        """The one NOTIFY bob got since the last call, answered."""
        [notify] = self.bob.notifies()
        self.bob.answer(notify)
        return notify

    def test_notifyNothingPublished(self) -> None:
        """RFC 3842 3.5 / 5.2: with nothing published, Messages-Waiting: no for bob."""
        notify = self.subscribed()
        self.assertEqual(notify.header("event"), "message-summary")
        self.assertEqual(notify.header("content-type"), MWI_TYPE)
        self.assertEqual(notify.body, NO_MESSAGES)

    def test_publishThenSubscribe(self) -> None:
        """RFC 3842 3.8 / RFC 3903: the NOTIFY carries the published summary."""
        self.publish(SUMMARY)
        notify = self.subscribed()
        self.assertEqual(notify.header("subscription-state"), "active;expires=600")
        self.assertEqual(notify.header("content-type"), MWI_TYPE)
        self.assertEqual(notify.body, SUMMARY)

    def test_publishNotifies(self) -> None:
        """RFC 3842 3.8: a new summary is sent to the subscriber at once."""
        self.subscribed()
        self.publish(SUMMARY)
        self.assertEqual(self.nextNotify().body, SUMMARY)

    def test_modify(self) -> None:
        """RFC 3903 4.4: a modifying PUBLISH replaces the summary watchers see."""
        etag = self.publish(SUMMARY)
        self.subscribed()
        read = b"Messages-Waiting: no\r\nVoice-Message: 0/10 (0/2)\r\n"
        self.publish(read, etag=etag)
        self.assertEqual(self.nextNotify().body, read)

    def test_refreshIsQuiet(self) -> None:
        """RFC 3903 4.3: a refresh changes nothing, so no NOTIFY is sent."""
        etag = self.publish(SUMMARY)
        self.subscribed()
        self.publish(None, etag=etag)
        self.assertEqual(self.bob.notifies(), [])

    def test_newestPublicationWins(self) -> None:
        """RFC 3842 3.8: of two publications, the newest one's summary is sent."""
        self.publish(SUMMARY)
        self.server.advance(1)
        other = UA(self.server, "vmail", "192.0.2.41", 5081)
        newer = b"Messages-Waiting: yes\r\nVoice-Message: 3/8\r\n"
        response = other.publish(
            newer,
            event="message-summary",
            contentType=MWI_TYPE,
            presentity="sip:bob@example.com",
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(self.subscribed().body, newer)

    def test_lineEndingsNormalised(self) -> None:
        """RFC 3842 5.2: a summary published with LF is sent with CRLF."""
        self.publish(SUMMARY.replace(b"\r\n", b"\n"))
        self.assertEqual(self.subscribed().body, SUMMARY)

    def test_lastLineEnded(self) -> None:
        """RFC 3842 5.2: a summary published without its last CRLF gets one."""
        self.publish(SUMMARY[:-2])
        self.assertEqual(self.subscribed().body, SUMMARY)

    def test_removal(self) -> None:
        """RFC 3903 4.5: removing the publication sends the empty mailbox."""
        etag = self.publish(SUMMARY)
        self.subscribed()
        self.publish(None, etag=etag, expires=0)
        self.assertEqual(self.nextNotify().body, NO_MESSAGES)

    def test_publicationExpires(self) -> None:
        """RFC 3903 5: an expired summary leaves Messages-Waiting: no."""
        self.publish(SUMMARY, expires=60)
        self.subscribed()
        self.server.advance(61)
        notify = self.nextNotify()
        self.assertEqual(notify.body, NO_MESSAGES)
        self.assertEqual(self.server.store.counts()["publications"], 0)

    def test_malformed(self) -> None:
        """RFC 3903 6 step 3: a summary off the RFC 3842 grammar gets 400 with why."""
        for body, why in [
            (b"Voice-Message: 1/2\r\n", "Messages-Waiting"),
            (b"Messages-Waiting: perhaps\r\n", "yes or no"),
            (b"Messages-Waiting: yes\r\nVoice-Message: x\r\n", "counts"),
        ]:
            response = self.vmail.publish(
                body,
                event="message-summary",
                contentType=MWI_TYPE,
                presentity="sip:bob@example.com",
            )
            self.assertEqual(response.code, 400, repr(body))
            self.assertIn(why, response.phrase)

    def test_wrongType(self) -> None:
        """RFC 3903 6 step 3: another Content-Type gets 415 with Accept."""
        response = self.vmail.publish(
            SUMMARY,
            event="message-summary",
            contentType="text/plain",
            presentity="sip:bob@example.com",
        )
        self.assertEqual(response.code, 415)
        self.assertEqual(response.header("accept"), MWI_TYPE)

    def test_onlyTheOwner(self) -> None:
        """RFC 3842 3.7: another user's SUBSCRIBE to bob's mailbox gets 403."""
        self.publish(SUMMARY)
        alice = Subscriber(self.server, "alice", "192.0.2.20", 5070)
        response = alice.subscribe("sip:bob@example.com", event="message-summary")
        self.assertEqual(response.code, 403)
        self.assertEqual(alice.notifies(), [])

    def test_keptApartFromPresence(self) -> None:
        """RFC 6665 7.2: a summary is not seen by bob's presence watchers."""
        self.publish(SUMMARY)
        response = self.bob.subscribe("sip:bob@example.com", event="presence")
        self.assertEqual(response.code, 200)
        [notify] = self.bob.notifies()
        self.assertEqual(notify.header("content-type"), "application/pidf+xml")
        self.assertNotIn(b"Messages-Waiting", notify.body)
