"""The dialog package (RFC 4235) and dialog;sla (draft-anil-sipping-bla)."""

from __future__ import annotations

from lxml import etree
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from presence.packages.dialog import (
    DIALOG_INFO_NS,
    DIALOG_INFO_TYPE,
    DialogPackage,
    SharedLineDialogPackage,
    aggregate,
    checkDialogInfo,
)
from presence.packages.interfaces import IEventPackage, PackageRegistry
from presence.sip.errors import BadRequest
from presence.sip.message import SIPRequest, TokenParams
from presence.testing import UA, Server, Subscriber

D = f"{{{DIALOG_INFO_NS}}}"
SA_NS = "urn:ietf:params:xml:ns:sa-dialog-info"
BOB = "sip:bob@example.com"


def dialogInfo(
    *dialogs: tuple[str, str],
    version: str = "0",
    state: str = "full",
    entity: str = BOB,
) -> bytes:
    """A dialog-info document with (id, state) dialogs."""
    body = "".join(
        f'<dialog id="{ident}" direction="initiator"><state>{s}</state></dialog>'
        for ident, s in dialogs
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<dialog-info xmlns="{DIALOG_INFO_NS}" version="{version}"'
        f' state="{state}" entity="{entity}">{body}</dialog-info>'
    ).encode()


def dialogs(body: bytes) -> dict[str, str]:
    """Dialog id -> state of a dialog-info document."""
    root = etree.fromstring(body)
    return {
        d.get("id") or "": d.findtext(D + "state") or ""
        for d in root.iter(D + "dialog")
    }


class DialogInfoTests(SynchronousTestCase):
    """checkDialogInfo and aggregate, without a server."""

    def test_valid(self) -> None:
        """RFC 4235 4.1: a full document with dialogs and an empty one are valid."""
        checkDialogInfo(dialogInfo(("a", "confirmed"), ("b", "early")))
        checkDialogInfo(dialogInfo(state="partial", version="12"))

    def test_malformed(self) -> None:
        """RFC 4235 4.1: a document off the format raises BadRequest saying why."""
        ns = DIALOG_INFO_NS
        cases = {
            b"<dialog-info": "malformed",
            b'<dialog-info version="0" state="full" entity="sip:b@x"/>': "namespace",
            f'<dialog xmlns="{ns}" id="a"/>'.encode(): "root",
            dialogInfo(version="").replace(b' version=""', b""): "version",
            dialogInfo(version="-1"): "version",
            dialogInfo(version="x"): "version",
            dialogInfo(state="some"): "full or partial",
            dialogInfo(entity=""): "entity",
            dialogInfo(("", "confirmed")): "id",
            dialogInfo(("a", "ringing")): "state must be",
            f'<dialog-info xmlns="{ns}" version="0" state="full" entity="{BOB}">'
            '<dialog id="a"/></dialog-info>'.encode(): "needs a state",
            b'<!DOCTYPE x [<!ENTITY e "e">]>' + dialogInfo().partition(b"\n")[2]: "DTD",
        }
        for body, why in cases.items():
            error = self.assertRaises(BadRequest, checkDialogInfo, body)
            self.assertIn(why, error.reason, repr(body))

    def test_aggregateNewestWins(self) -> None:
        """RFC 4235 4.1: dialogs merge by id, the newest document's dialog winning."""
        old = dialogInfo(("a", "early"), ("b", "confirmed"))
        new = dialogInfo(("a", "confirmed"), ("c", "trying"))
        body = aggregate(BOB, 7, [old, new])
        self.assertEqual(
            dialogs(body), {"a": "confirmed", "b": "confirmed", "c": "trying"}
        )
        root = etree.fromstring(body)
        self.assertEqual(
            (root.get("version"), root.get("state"), root.get("entity")),
            ("7", "full", BOB),
        )

    def test_aggregateDefaultNamespace(self) -> None:
        """RFC 4235 4.1: prefixed input comes out unprefixed; extensions stay."""
        prefixed = (
            f'<d:dialog-info xmlns:d="{DIALOG_INFO_NS}" xmlns:sa="{SA_NS}"'
            f' version="3" state="partial" entity="sip:bob@phone.example.com">'
            '<d:dialog id="a"><d:state>confirmed</d:state>'
            "<sa:appearance>2</sa:appearance>"
            '<d:local><d:identity display="Bob">sip:bob@example.com</d:identity>'
            "</d:local></d:dialog></d:dialog-info>"
        ).encode()
        body = aggregate(BOB, 0, [prefixed])
        self.assertIn(f'<dialog-info xmlns="{DIALOG_INFO_NS}"'.encode(), body)
        self.assertNotIn(b"<d:", body)
        self.assertIn(b"<state>confirmed</state>", body)
        self.assertIn(b'<identity display="Bob">sip:bob@example.com</identity>', body)
        self.assertIn(b"<sa:appearance>2</sa:appearance>", body)
        root = etree.fromstring(body)
        self.assertEqual(root.findtext(f"{D}dialog/{{{SA_NS}}}appearance"), "2")

    def test_aggregateNothing(self) -> None:
        """RFC 4235 4.1: with no publication the document has no dialogs."""
        root = etree.fromstring(aggregate(BOB, 0, []))
        self.assertEqual(root.tag, D + "dialog-info")
        self.assertEqual(len(root), 0)


class DialogPackageTests(SynchronousTestCase):
    """The package objects themselves."""

    def test_interface(self) -> None:
        """DialogPackage provides IEventPackage."""
        self.assertTrue(verifyObject(IEventPackage, DialogPackage()))

    def test_interfaceSharedLine(self) -> None:
        """SharedLineDialogPackage provides IEventPackage."""
        self.assertTrue(verifyObject(IEventPackage, SharedLineDialogPackage()))

    def test_attributes(self) -> None:
        """RFC 4235 3.1, 3.5, 3.6: names, the type, PUBLISH, authorisation by policy."""
        for package, name in [
            (DialogPackage(), "dialog"),
            (SharedLineDialogPackage(), "dialog;sla"),
        ]:
            self.assertEqual(package.name, name)
            self.assertEqual(package.acceptTypes, [DIALOG_INFO_TYPE])
            self.assertEqual(package.notifyTypes, [DIALOG_INFO_TYPE])
            self.assertTrue(package.acceptsPublish)
            self.assertTrue(package.needsAuthorisation)
            self.assertFalse(package.ownerOnly)
            self.assertIsNone(package.watcherInfo)

    def test_registryFindsSharedLine(self) -> None:
        """BLA draft: Event dialog;sla finds dialog;sla, Event dialog finds dialog."""
        dialog, sla = DialogPackage(), SharedLineDialogPackage()
        registry = PackageRegistry([dialog, sla])
        self.assertIs(registry.find(TokenParams("dialog", {"sla": None})), sla)
        self.assertIs(registry.find(TokenParams("dialog", {"id": "1"})), dialog)
        self.assertIs(registry.find(TokenParams("dialog")), dialog)
        self.assertEqual(registry.allowEvents, ["dialog"])

    def test_validateChecksTheBody(self) -> None:
        """RFC 4235 4.1: validate checks the document; the media type is the core's.

        The core answers 415 to another Content-Type before it calls validate
        (see ``test_wrongType``), so validate checks the body alone: a
        dialog-info document passes, one off the format raises BadRequest.
        """
        package = DialogPackage()
        package.validate(dialogInfo(("a", "confirmed")), DIALOG_INFO_TYPE)
        error = self.assertRaises(
            BadRequest, package.validate, dialogInfo(state="some"), DIALOG_INFO_TYPE
        )
        self.assertIn("full or partial", error.reason)


class DialogServerTests(SynchronousTestCase):
    """dialog and dialog;sla through the whole server over in-memory transports.

    Bob's phones publish his dialogs; alice watches them.
    """

    def setUp(self) -> None:
        """Start a server with both packages, bob's phone and alice."""
        self.server = Server()
        self.addCleanup(self.server.close)
        self.server.register(DialogPackage(), SharedLineDialogPackage())
        self.bob = UA(self.server, "bob", "192.0.2.21", 5071)
        self.alice = Subscriber(self.server, "alice", "192.0.2.20", 5070)

    def publish(self, body: bytes | None, ua: UA | None = None, **kw: object) -> str:
        """Publish bob's dialogs; return the SIP-ETag."""
        kw.setdefault("event", "dialog")
        response = (ua or self.bob).publish(
            body,
            contentType=DIALOG_INFO_TYPE,
            **kw,  # type: ignore[arg-type]
        )
        self.assertEqual(response.code, 200, response.phrase)
        return response.header("sip-etag") or ""

    def subscribed(
        self, watcher: Subscriber | None = None, event: str = "dialog"
    ) -> SIPRequest:
        """Subscribe to bob's dialogs; answer and return the first NOTIFY."""
        watcher = watcher or self.alice
        response = watcher.subscribe(BOB, event=event)
        self.assertEqual(response.code, 200, response.phrase)
        [notify] = watcher.notifies()
        watcher.answer(notify)
        return notify

    def nextNotify(self, watcher: Subscriber | None = None) -> SIPRequest:
        """The one NOTIFY the watcher got since the last call, answered."""
        watcher = watcher or self.alice
        [notify] = watcher.notifies()
        watcher.answer(notify)
        return notify

    def version(self, notify: SIPRequest) -> int:
        """The version of a NOTIFY's dialog-info."""
        return int(etree.fromstring(notify.body).get("version") or "-1")

    def test_nothingPublished(self) -> None:
        """RFC 4235 3.7: with nothing published, a full document without dialogs."""
        notify = self.subscribed()
        self.assertEqual(notify.header("event"), "dialog")
        self.assertEqual(notify.header("content-type"), DIALOG_INFO_TYPE)
        root = etree.fromstring(notify.body)
        self.assertEqual(root.tag, D + "dialog-info")
        self.assertEqual(
            (root.get("version"), root.get("state"), root.get("entity")),
            ("0", "full", BOB),
        )
        self.assertEqual(len(root), 0)

    def test_publishThenSubscribe(self) -> None:
        """RFC 4235 3.7 / RFC 3903: the first NOTIFY carries the published dialogs."""
        self.publish(dialogInfo(("call-1", "confirmed")))
        notify = self.subscribed()
        self.assertEqual(notify.header("subscription-state"), "active;expires=600")
        self.assertEqual(notify.header("content-type"), DIALOG_INFO_TYPE)
        self.assertEqual(dialogs(notify.body), {"call-1": "confirmed"})
        self.assertIn(f'<dialog-info xmlns="{DIALOG_INFO_NS}"'.encode(), notify.body)

    def test_modify(self) -> None:
        """RFC 3903 4.4: a modifying PUBLISH sends the changed dialogs."""
        etag = self.publish(dialogInfo(("call-1", "early")))
        self.subscribed()
        self.publish(dialogInfo(("call-1", "confirmed"), version="1"), etag=etag)
        self.assertEqual(dialogs(self.nextNotify().body), {"call-1": "confirmed"})

    def test_twoPublicationsAggregated(self) -> None:
        """RFC 4235 4.1: the dialogs of two phones make one full document."""
        desk = UA(self.server, "bob", "192.0.2.22", 5072)
        self.publish(dialogInfo(("desk-1", "confirmed")), ua=desk)
        self.server.advance(1)
        self.publish(dialogInfo(("mobile-1", "early"), ("desk-1", "terminated")))
        notify = self.subscribed()
        self.assertEqual(
            dialogs(notify.body), {"desk-1": "terminated", "mobile-1": "early"}
        )
        self.assertEqual(etree.fromstring(notify.body).get("state"), "full")

    def test_versionCountsPerSubscription(self) -> None:
        """RFC 4235 4.1: version counts 0, 1, 2... for each subscription alone."""
        etag = self.publish(dialogInfo(("call-1", "trying")))
        self.assertEqual(self.version(self.subscribed()), 0)
        etag = self.publish(dialogInfo(("call-1", "early")), etag=etag)
        self.assertEqual(self.version(self.nextNotify()), 1)
        carol = Subscriber(self.server, "carol", "192.0.2.23", 5073)
        self.assertEqual(self.version(self.subscribed(carol)), 0)
        self.publish(dialogInfo(("call-1", "confirmed")), etag=etag)
        self.assertEqual(self.version(self.nextNotify()), 2)
        self.assertEqual(self.version(self.nextNotify(carol)), 1)
        response = self.alice.subscribe(event="dialog", refresh=True)
        self.assertEqual(response.code, 200)
        self.assertEqual(self.version(self.nextNotify()), 3)

    def test_cseqKeepsCounting(self) -> None:
        """RFC 3261 12.2.1.1: saving the version does not set back the NOTIFY CSeq."""
        etag = self.publish(dialogInfo(("call-1", "trying")))
        cseqs = [self.subscribed().cseq.number]
        for state in ("early", "confirmed", "terminated"):
            etag = self.publish(dialogInfo(("call-1", state)), etag=etag)
            cseqs.append(self.nextNotify().cseq.number)
        self.assertEqual(cseqs, list(range(cseqs[0], cseqs[0] + 4)))

    def test_removal(self) -> None:
        """RFC 3903 4.5: removing the publication sends a document without dialogs."""
        etag = self.publish(dialogInfo(("call-1", "confirmed")))
        self.subscribed()
        self.publish(None, etag=etag, expires=0)
        notify = self.nextNotify()
        self.assertEqual(dialogs(notify.body), {})
        self.assertEqual(self.version(notify), 1)

    def test_publicationExpires(self) -> None:
        """RFC 3903 5: an expired publication leaves a document without dialogs."""
        self.publish(dialogInfo(("call-1", "confirmed")), expires=60)
        self.subscribed()
        self.server.advance(61)
        notify = self.nextNotify()
        self.assertEqual(dialogs(notify.body), {})
        self.assertEqual(etree.fromstring(notify.body).get("state"), "full")
        self.assertEqual(self.server.store.counts()["publications"], 0)

    def test_malformed(self) -> None:
        """RFC 3903 6 step 3: a document off RFC 4235 gets 400 saying why."""
        for body, why in [
            (b"<dialog-info", "malformed"),
            (dialogInfo(state="sometimes"), "full or partial"),
            (dialogInfo(("", "confirmed")), "id"),
        ]:
            response = self.bob.publish(
                body, event="dialog", contentType=DIALOG_INFO_TYPE
            )
            self.assertEqual(response.code, 400, repr(body))
            self.assertIn(why, response.phrase)

    def test_wrongType(self) -> None:
        """RFC 3903 6 step 3: another Content-Type gets 415 with Accept."""
        response = self.bob.publish(
            dialogInfo(), event="dialog", contentType="application/pidf+xml"
        )
        self.assertEqual(response.code, 415)
        self.assertEqual(response.header("accept"), DIALOG_INFO_TYPE)

    def test_sharedLine(self) -> None:
        """BLA draft: dialog;sla publications reach dialog;sla watchers."""
        self.publish(dialogInfo(("line-1", "confirmed")), event="dialog;sla")
        notify = self.subscribed(event="dialog;sla")
        self.assertEqual(notify.header("event"), "dialog;sla")
        self.assertEqual(notify.header("content-type"), DIALOG_INFO_TYPE)
        self.assertEqual(dialogs(notify.body), {"line-1": "confirmed"})

    def test_sharedLineKeptFromDialog(self) -> None:
        """BLA draft: a dialog;sla PUBLISH is not seen by dialog watchers."""
        self.subscribed(event="dialog")
        self.publish(dialogInfo(("line-1", "confirmed")), event="dialog;sla")
        self.assertEqual(self.alice.notifies(), [])
        carol = Subscriber(self.server, "carol", "192.0.2.23", 5073)
        self.assertEqual(dialogs(self.subscribed(carol, event="dialog").body), {})

    def test_dialogKeptFromSharedLine(self) -> None:
        """BLA draft: a dialog PUBLISH is not seen by dialog;sla watchers."""
        self.subscribed(event="dialog;sla")
        self.publish(dialogInfo(("call-1", "confirmed")), event="dialog")
        self.assertEqual(self.alice.notifies(), [])
        carol = Subscriber(self.server, "carol", "192.0.2.23", 5073)
        self.assertEqual(dialogs(self.subscribed(carol, event="dialog;sla").body), {})
