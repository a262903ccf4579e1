"""End to end over real sockets for message-summary, dialog.

Dialog;sla and presence.winfo: publish, subscribe, notify, update and expiry.
"""

from __future__ import annotations

from typing import Any

from lxml import etree
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from presence.sip.message import SIPRequest
from test.support.sockets import SocketUA, startServer

BOB = "sip:bob@example.com"
MWI = "application/simple-message-summary"
DIALOG = "application/dialog-info+xml"
DIALOG_NS = "{urn:ietf:params:xml:ns:dialog-info}"
WINFO_NS = "{urn:ietf:params:xml:ns:watcherinfo}"


def dialogInfo(*ids: str, state: str = "confirmed") -> bytes:
    """A dialog-info document of bob with dialogs ``ids``."""
    dialogs = "".join(
        f'<dialog id="{i}" call-id="c-{i}" direction="initiator">'
        f"<state>{state}</state></dialog>"
        for i in ids
    )
    return (
        '<?xml version="1.0"?><dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info"'
        f' version="0" state="full" entity="{BOB}">{dialogs}</dialog-info>'
    ).encode()


def dialogs(notify: SIPRequest) -> tuple[str | None, list[str]]:
    """The version and the dialog ids of a dialog-info NOTIFY."""
    root = etree.fromstring(notify.body)
    return root.get("version"), [
        d.get("id") or "" for d in root.iter(DIALOG_NS + "dialog")
    ]


class PackagesEndToEndTests(TestCase):
    """Each event package over a real server on loopback sockets."""

    timeout = 30

    def setUp(self) -> None:
        """Start a server on ephemeral ports."""
        self.server, self.port, _ = startServer(reactor)
        self.addCleanup(self.server.stopService)

    async def ua(self, user: str) -> SocketUA:
        """A started user agent on UDP."""
        agent = SocketUA(reactor, user, self.port)
        await agent.start()
        self.addCleanup(agent.close)
        self.addCleanup(lambda: self.assertEqual(agent.errors, []))
        return agent

    async def expirePublications(self, event: str) -> None:
        """Make bob's publications of ``event`` due now; the sweep ends them."""
        store: Any = self.server.stack.store
        due = self.server.stack.reactor.seconds() - 1
        for publication in await store.publications("bob@example.com", event):
            await store.putPublication(publication.copy(expires=due))

    async def expireSubscriptions(self, presentity: str, event: str) -> None:
        """Make the subscriptions to ``presentity`` due now."""
        store: Any = self.server.stack.store
        for subscription in await store.subscriptions(presentity, event):
            subscription.expires = self.server.stack.reactor.seconds() - 1
            await store.putSubscription(subscription)

    async def test_messageSummary(self) -> None:
        """RFC 3842.

        The mailbox owner sees messages waiting, a change, and the empty state
        after the voicemail server's publication expires.
        """
        voicemail = await self.ua("bob")
        phone = await self.ua("bob")
        response = await phone.subscribe(BOB, event="message-summary", accept=MWI)
        self.assertEqual(response.code, 200)
        first = await phone.notify()
        self.assertEqual(first.header("content-type"), MWI)
        self.assertIn(b"Messages-Waiting: no", first.body)
        body = b"Messages-Waiting: yes\r\nVoice-Message: 2/8 (0/2)\r\n"
        published = await voicemail.publish(
            body, event="message-summary", contentType=MWI
        )
        self.assertEqual(published.code, 200)
        update = await phone.notify()
        self.assertIn(b"Voice-Message: 2/8 (0/2)", update.body)
        etag = published.header("sip-etag")
        body = b"Messages-Waiting: yes\r\nVoice-Message: 3/8 (1/2)\r\n"
        modified = await voicemail.publish(
            body, etag, event="message-summary", contentType=MWI
        )
        self.assertEqual(modified.code, 200)
        self.assertIn(b"3/8 (1/2)", (await phone.notify()).body)
        await self.expirePublications("message-summary")
        gone = await phone.notify()
        self.assertIn(b"Messages-Waiting: no", gone.body)
        self.assertGreater(gone.cseq.number, update.cseq.number)

    async def test_messageSummaryOwnerOnly(self) -> None:
        """Only the mailbox owner may subscribe to its message summary."""
        alice = await self.ua("alice")
        response = await alice.subscribe(BOB, event="message-summary", accept=MWI)
        self.assertEqual(response.code, 403)

    async def test_dialog(self) -> None:
        """RFC 4235.

        A watcher sees bob's dialogs come, change and go, with the version
        counting up.
        """
        phone = await self.ua("bob")
        alice = await self.ua("alice")
        self.assertEqual(
            (await alice.subscribe(BOB, event="dialog", accept=DIALOG)).code, 200
        )
        first = await alice.notify()
        self.assertEqual(first.header("content-type"), DIALOG)
        self.assertEqual(dialogs(first), ("0", []))
        published = await phone.publish(
            dialogInfo("d1"), event="dialog", contentType=DIALOG
        )
        self.assertEqual(published.code, 200)
        self.assertEqual(dialogs(await alice.notify()), ("1", ["d1"]))
        modified = await phone.publish(
            dialogInfo("d1", "d2"),
            published.header("sip-etag"),
            event="dialog",
            contentType=DIALOG,
        )
        self.assertEqual(modified.code, 200)
        self.assertEqual(dialogs(await alice.notify()), ("2", ["d1", "d2"]))
        await self.expirePublications("dialog")
        self.assertEqual(dialogs(await alice.notify()), ("3", []))

    async def test_dialogSLAApart(self) -> None:
        """A dialog;sla publication reaches dialog;sla watchers, not dialog ones."""
        phone = await self.ua("bob")
        sla = await self.ua("alice")
        plain = await self.ua("carol")
        await sla.subscribe(BOB, event="dialog;sla", accept=DIALOG)
        self.assertEqual((await sla.notify()).header("event"), "dialog;sla")
        await plain.subscribe(BOB, event="dialog", accept=DIALOG)
        await plain.notify()
        published = await phone.publish(
            dialogInfo("line1"), event="dialog;sla", contentType=DIALOG
        )
        self.assertEqual(published.code, 200)
        self.assertEqual(dialogs(await sla.notify())[1], ["line1"])
        await plain.ping()
        await phone.ping()
        self.assertEqual(plain.notifications.pending, [])

    async def test_watcherInfo(self) -> None:
        """RFC 3857.

        Bob sees alice arrive (full, then partial state) and her subscription
        expire.
        """
        bob = await self.ua("bob")
        alice = await self.ua("alice")
        self.assertEqual((await alice.subscribe(BOB)).code, 200)
        await alice.notify()
        response = await bob.subscribe(
            BOB, event="presence.winfo", accept="application/watcherinfo+xml"
        )
        self.assertEqual(response.code, 200)
        full = etree.fromstring((await bob.notify()).body)
        self.assertEqual((full.get("state"), full.get("version")), ("full", "0"))
        self.assertEqual(
            [w.text for w in full.iter(WINFO_NS + "watcher")], ["sip:alice@example.com"]
        )
        await self.expireSubscriptions(BOB, "presence")
        ended = etree.fromstring((await bob.notify()).body)
        self.assertEqual((ended.get("state"), ended.get("version")), ("partial", "1"))
        [watcher] = ended.iter(WINFO_NS + "watcher")
        self.assertEqual(
            (watcher.get("status"), watcher.get("event")), ("terminated", "timeout")
        )
        final = await alice.notify()
        self.assertTrue(
            (final.header("subscription-state") or "").startswith("terminated")
        )

    async def test_watcherInfoForbidden(self) -> None:
        """RFC 3857 4.6: another user may not watch bob's watchers (403)."""
        alice = await self.ua("alice")
        response = await alice.subscribe(
            BOB, event="presence.winfo", accept="application/watcherinfo+xml"
        )
        self.assertEqual(response.code, 403)
