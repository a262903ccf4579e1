"""The xcap-diff PUBLISH of OpenXCAP 3.x: "these documents changed".

OpenXCAP 2.3 and later tell the presence server of a change (PUT or DELETE,
any application) with a PUBLISH of ``Event: xcap-diff``, ``Expires: 0`` and
an RFC 5874 body with one ``<document sel="...">`` per changed document;
``sel`` is the document's absolute URI (RFC 5874's examples use one relative
to the XCAP root). `XCAPDiffPublish` takes those PUBLISHes from the PUBLISH
handler: it re-authorises the watchers of each user a document names at
once, answers 200 with ``Expires: 0`` and keeps nothing (no publication, no
entity tag), over any transport. Only the documents of the user the
Request-URI names count: OpenXCAP sends a user's xcap-diff to that user's
URI, and a ``sel`` naming another user's document is ignored (logged). In
the external XCAP mode the user's documents are fetched again first (the
server holds a copy). Every other PUBLISH goes on to the PUBLISH handler.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from twisted.logger import Logger

from presence.auth.identity import Identity
from presence.core.authorise import Reauthoriser
from presence.core.subscribe import presentityOf
from presence.packages.xml import parseXML
from presence.sip.errors import BadRequest, SIPParseError, UnsupportedMediaType
from presence.sip.message import SIPRequest
from presence.sip.transaction import ServerTransaction

XCAP_DIFF_NS: Final = "urn:ietf:params:xml:ns:xcap-diff"
XCAP_DIFF_TYPE: Final = "application/xcap-diff+xml"
_XD: Final = "{" + XCAP_DIFF_NS + "}"


def documentOwner(sel: str) -> str | None:
    """The ``user@domain`` whose document a ``sel`` names, or ``None``.

    ``sel`` is an absolute URI (``http://host/xcap-root/pres-rules/users/
    sip:bob@example.com/index``) or one relative to the XCAP root
    (``pres-rules/users/sip:bob@example.com/index``, RFC 5874 section 4);
    the owner is the XUI after ``users`` (RFC 4825 section 6.2), with or
    without ``sip:``, percent-decoded. Global documents have no owner.
    """
    path = urlsplit(sel).path if "://" in sel else sel
    steps = path.split("/")
    for i, step in enumerate(steps[:-1]):
        if step == "users" and i >= 1:
            xui = unquote(steps[i + 1])
            if xui.startswith(("sip:", "sips:")):
                xui = xui.partition(":")[2]
            user, at, domain = xui.rpartition("@")
            if at and user and domain:
                return f"{user}@{domain.lower()}"
            return None
    return None


class XCAPDiffPublish:
    """PUBLISH: xcap-diff re-authorises, anything else is published."""

    log = Logger()

    def __init__(
        self,
        publish: Any,
        reauthoriser: Reauthoriser,
        domains: Sequence[str] = (),
        fetch: Callable[[str, str], Awaitable[bool]] | None = None,
    ) -> None:
        """Take xcap-diff PUBLISHes off ``publish``.

        Args:
            publish: the PUBLISH handler for every other event.
            reauthoriser: re-authorises a presentity's watchers.
            domains: the domains served; every domain when empty.
            fetch: the external XCAP mode's client (user, domain in):
                fetches the user's documents again and, when one changed,
                re-authorises; whether one changed. None: the integrated
                mode, where the table already holds what changed.
        """
        self.publish = publish
        self.reauthoriser = reauthoriser
        self.fetch = fetch
        self.domains = [d.lower() for d in domains]
        self.received = 0

    async def __call__(
        self,
        request: SIPRequest,
        transaction: ServerTransaction,
        identity: Identity | None = None,
    ) -> None:
        """Answer a PUBLISH."""
        try:
            event = request.event
        except SIPParseError:
            event = None
        if event is None or event.value != "xcap-diff":
            await self.publish(request, transaction, identity)
            return
        aor, _ = presentityOf(request, self.domains)
        contentType = request.contentType
        if contentType is None or contentType.value != XCAP_DIFF_TYPE:
            raise UnsupportedMediaType([XCAP_DIFF_TYPE])
        root = parseXML(request.body, "xcap-diff")
        if root.tag != _XD + "xcap-diff":
            raise BadRequest("the root must be xcap-diff in its namespace")
        owners: list[str] = []
        for document in root.iterchildren(_XD + "document"):
            owner = documentOwner(document.get("sel") or "")
            if owner is None:
                continue
            if self.domains and owner.rpartition("@")[2] not in self.domains:
                continue
            if owner != aor:
                # OpenXCAP sends a user's xcap-diff to that user's URI; a
                # PUBLISH speaks only of its presentity (RFC 3903 section 4).
                self.log.info(
                    "xcap-diff to {aor} names a document of {owner}: ignored",
                    aor=aor,
                    owner=owner,
                )
                continue
            if owner not in owners:
                owners.append(owner)
        self.received += 1
        # Nothing is kept: no publication and no entity tag (RFC 3903's
        # Expires: 0), whatever the request asked.
        transaction.respond(transaction.response(200, "", [("Expires", "0")]))
        for owner in owners:
            if self.fetch is not None:
                # The external mode holds a copy: fetch what changed first
                # (a change re-authorises there).
                user, _, domain = owner.rpartition("@")
                if await self.fetch(user, domain):
                    continue
            await self.reauthoriser.reauthorise(f"sip:{owner}", "presence")
