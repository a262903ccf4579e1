"""The ``dialog`` event package (RFC 4235) and its shared-line form ``dialog;sla``.

Bodies are ``application/dialog-info+xml``. A PUBLISH carries one
``dialog-info`` document with the publisher's dialogs; a NOTIFY carries one
document for the presentity (the ``entity``) holding the dialogs of every
live publication, taken by ``id`` from the newest publication that has it,
always with ``state="full"``. Its ``version`` counts the NOTIFY bodies of the
subscription, from 0 and without gaps (RFC 4235 section 4.1): the package
reads ``subscription.version``, writes it, and raises it, and the core saves
the subscription. Dialog-info elements are written in the default
namespace, never with a prefix; elements of other namespaces (the shared
appearance extensions of the BLA draft, for instance) are carried through.
A publication holds its publisher's whole state: one published with
``state="partial"`` is accepted but replaces the previous one all the same
(RFC 3903 keeps no history to apply a partial document to).

``dialog;sla`` (Bridged Line Appearance, draft-anil-sipping-bla) has the
same bodies but is a separate package: the phones of a shared line publish
and subscribe with ``Event: dialog;sla``, and their state is kept apart from
the ``dialog`` state of the same address.

Watchers go through the privacy policy, as for presence: dialog state tells
who the presentity is talking to.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Final

from lxml import etree
from zope.interface import implementer

from presence.packages.base import EventPackage
from presence.packages.interfaces import Body, IEventPackage
from presence.packages.xml import parseXML, serialise
from presence.sip.errors import BadRequest
from presence.storage.records import Publication, Subscription

DIALOG_INFO_NS: Final = "urn:ietf:params:xml:ns:dialog-info"
DIALOG_INFO_TYPE: Final = "application/dialog-info+xml"
_DI: Final = "{" + DIALOG_INFO_NS + "}"

#: The values of a dialog's ``<state>`` (RFC 4235 section 4.1.2).
DIALOG_STATES: Final = frozenset(
    {"trying", "proceeding", "early", "confirmed", "terminated"}
)


def _namespace(tag: str) -> str | None:
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else None


def checkDialogInfo(body: bytes) -> etree._Element:
    """Parse and check a dialog-info document; return its root.

    Raises:
        BadRequest: not well-formed, or not a dialog-info document as RFC
            4235 section 4 defines it; the reason says how.
    """
    root = parseXML(body, "dialog-info")
    if root.tag != _DI + "dialog-info":
        raise BadRequest("root must be dialog-info in the dialog-info namespace")
    version = root.get("version")
    if version is None:
        raise BadRequest("dialog-info needs a version")
    if not version.isascii() or not version.isdigit():
        raise BadRequest("dialog-info version must be a non-negative integer")
    if root.get("state") not in ("full", "partial"):
        raise BadRequest("dialog-info state must be full or partial")
    if not root.get("entity"):
        raise BadRequest("dialog-info needs an entity")
    for dialog in root.iterchildren(_DI + "dialog"):
        if not dialog.get("id"):
            raise BadRequest("dialog needs an id")
        state = dialog.find(_DI + "state")
        if state is None:
            raise BadRequest("dialog needs a state")
        if (state.text or "").strip() not in DIALOG_STATES:
            raise BadRequest(
                "dialog state must be one of " + ", ".join(sorted(DIALOG_STATES))
            )
    return root


def _copy(parent: etree._Element, source: etree._Element) -> etree._Element:
    """Rebuild ``source`` under ``parent``, so that it takes its prefixes.

    An element of a namespace no prefix in scope names declares it as its
    default namespace (rather than getting a made-up prefix).
    """
    namespace = _namespace(source.tag)
    nsmap: Any = None
    if namespace is not None and namespace not in parent.nsmap.values():
        nsmap = {None: namespace}
    element = etree.SubElement(parent, source.tag, nsmap=nsmap)
    for key, value in source.attrib.items():
        element.set(key, value)
    element.text = source.text
    for child in source:
        if isinstance(child.tag, str):
            _copy(element, child).tail = child.tail
    return element


def aggregate(entity: str, version: int, documents: Sequence[bytes]) -> bytes:
    """One full dialog-info document for ``entity`` from ``documents``.

    Args:
        entity: the presentity URI.
        version: the document's version.
        documents: dialog-info documents, oldest first; a dialog is taken
            from the newest one that has its ``id``.
    """
    nsmap: dict[str | None, str] = {None: DIALOG_INFO_NS}
    dialogs: dict[str, etree._Element] = {}
    for document in documents:
        try:
            source = checkDialogInfo(document)
        except BadRequest:
            continue
        for element in source.iter():
            for prefix, uri in element.nsmap.items():
                if uri != DIALOG_INFO_NS and prefix is not None and prefix not in nsmap:
                    nsmap[prefix] = uri
        for dialog in source.iterchildren(_DI + "dialog"):
            ident = dialog.get("id", "")
            dialogs.pop(ident, None)
            dialogs[ident] = dialog
    # lxml-stubs type nsmap keys as str, but None is how lxml names the
    # default namespace.
    top: Any = nsmap
    root = etree.Element(_DI + "dialog-info", nsmap=top)
    root.set("version", str(version))
    root.set("state", "full")
    root.set("entity", entity)
    for dialog in dialogs.values():
        _copy(root, dialog)
    etree.cleanup_namespaces(root, top_nsmap=top)
    return serialise(root)


@implementer(IEventPackage)
class DialogPackage(EventPackage):
    """RFC 4235 dialog state with dialog-info bodies."""

    name = "dialog"
    acceptTypes: ClassVar[list[str]] = [DIALOG_INFO_TYPE]
    notifyTypes: ClassVar[list[str]] = [DIALOG_INFO_TYPE]

    def validate(self, body: bytes, contentType: str) -> None:
        """Accept a dialog-info document (RFC 4235 section 4).

        Its root is ``dialog-info`` with a ``version``, a ``state`` (full or
        partial) and an ``entity``; each ``dialog`` has an ``id`` and a
        ``state``.
        """
        checkDialogInfo(body)

    def notifyBody(
        self,
        presentity: str,
        subscription: Subscription,
        publications: Sequence[Publication],
    ) -> Body | None:
        """Aggregate the publications into a full document.

        The document has the subscription's version, which is then raised;
        with nothing published it has no dialogs.
        """
        version = subscription.version
        subscription.version = version + 1
        data = aggregate(presentity, version, [p.body for p in publications])
        return Body(DIALOG_INFO_TYPE, data)


@implementer(IEventPackage)
class SharedLineDialogPackage(DialogPackage):
    """``dialog;sla``: dialog state of a shared line (draft-anil-sipping-bla).

    Chosen by the core when the Event header is ``dialog`` with the ``sla``
    parameter; its publications and subscriptions are its own.
    """

    name = "dialog;sla"
