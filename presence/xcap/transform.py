"""What a watcher sees of a PIDF document: the RFC 5025 transformations.

`transform` keeps of a presence document exactly what a `Permissions`
provides: the tuples (services), ``dm:person`` and ``dm:device`` elements
(RFC 4479) it selects, and in each of them the presence attributes (RFC 4480
and others) it grants. Everything else goes: RFC 5025 section 3.3 grants
visibility, it never takes it away, so with no ``provide-*`` at all a
watcher gets a bare ``<presence>`` with its ``entity``.

Kept in every provided element whatever the permissions (RFC 5025 section
3.3.2): "The <contact>, <service-class>, <basic> status, and <timestamp>
elements in all <tuple> elements", "The <timestamp> element in all <person>
elements" and "The <timestamp> and <deviceID> elements in all <device>
elements".

Where the RFC leaves it open, this module withholds:

- a ``<note>`` of the ``<presence>`` itself is shown under ``provide-note``,
  like the notes of tuples, persons and devices;
- an element of the ``<presence>`` that is none of those (an extension) is an
  unknown attribute: shown under ``provide-all-attributes`` or a matching
  ``provide-unknown-attribute``;
- within ``<status>``, only ``<basic>`` is always kept; other children (RFC
  4119 location, RFC 3863 extensions) are unknown attributes;
- ``provide-unknown-attribute`` grants only elements for which no
  permission of RFC 5025 exists (it cannot grant ``<mood>``: only
  ``provide-mood`` can);
- ``provide-user-input`` ``bare`` keeps of ``<user-input>`` only its value
  and ``id``; ``thresholds`` adds ``idle-threshold``; ``full`` keeps every
  attribute, ``last-input`` too;
- of the ``<presence>`` element only ``entity`` is kept; comments and
  processing instructions are dropped.

The output is deterministic: the same document and permissions give the
same bytes, elements in document order, PIDF in the default namespace.
"""

from __future__ import annotations

from collections.abc import Sequence
from copy import deepcopy
from typing import Final

from lxml import etree

from presence.packages.xml import parseXML, serialise
from presence.sip.errors import BadRequest
from presence.xcap.rules import (
    Permissions,
    Selection,
    UserInput,
    elementText,
    identityKey,
)

PIDF_NS: Final = "urn:ietf:params:xml:ns:pidf"
DM_NS: Final = "urn:ietf:params:xml:ns:pidf:data-model"
RPID_NS: Final = "urn:ietf:params:xml:ns:pidf:rpid"

_PIDF: Final = "{" + PIDF_NS + "}"
_DM: Final = "{" + DM_NS + "}"
_RPID: Final = "{" + RPID_NS + "}"

_TUPLE: Final = _PIDF + "tuple"
_PERSON: Final = _DM + "person"
_DEVICE: Final = _DM + "device"
_STATUS: Final = _PIDF + "status"
_BASIC: Final = _PIDF + "basic"
_CONTACT: Final = _PIDF + "contact"
_USER_INPUT: Final = _RPID + "user-input"
_CLASS: Final = _RPID + "class"
_DEVICE_ID: Final = _DM + "deviceID"

#: Always provided in a provided element (RFC 5025 section 3.3.2).
_ALWAYS: Final = {
    _TUPLE: frozenset(
        {_STATUS, _CONTACT, _PIDF + "timestamp", _RPID + "service-class"}
    ),
    _PERSON: frozenset({_DM + "timestamp"}),
    _DEVICE: frozenset({_DM + "timestamp", _DEVICE_ID}),
}
_NONE: Final[frozenset[str]] = frozenset()

#: The attributes the boolean permissions grant, by element, with the name
#: `Permissions.attributes` uses. ``deviceID`` here is a tuple's (in a
#: device it is always kept).
_GRANTED_BY: Final = {
    _RPID + "activities": "activities",
    _CLASS: "class",
    _DEVICE_ID: "deviceID",
    _RPID + "mood": "mood",
    _RPID + "place-is": "place-is",
    _RPID + "place-type": "place-type",
    _RPID + "privacy": "privacy",
    _RPID + "relationship": "relationship",
    _RPID + "sphere": "sphere",
    _RPID + "status-icon": "status-icon",
    _RPID + "time-offset": "time-offset",
    _PIDF + "note": "note",
    _DM + "note": "note",
}

#: The attributes of ``<user-input>`` each level keeps; ``full`` keeps all.
_USER_INPUT_KEEPS: Final = {
    UserInput.BARE: frozenset({"id"}),
    UserInput.THRESHOLDS: frozenset({"id", "idle-threshold"}),
}


class NotPIDF(ValueError):
    """The document to transform is not a PIDF ``<presence>``."""


def _parsePIDF(pidf: bytes) -> etree._Element:
    try:
        root = parseXML(pidf, "PIDF")
    except BadRequest as e:
        raise NotPIDF(e.reason) from None
    if root.tag != _PIDF + "presence":
        raise NotPIDF("the root must be <presence> in the PIDF namespace")
    return root


def _childText(element: etree._Element, tag: str) -> str | None:
    child = element.find(tag)
    if child is None:
        return None
    return elementText(child)


def _selected(element: etree._Element, selection: Selection) -> bool:
    """Whether a tuple, person or device meets the selection (RFC 5025 3.3.1).

    Only the criteria of the element's kind count: service URIs and schemes
    for tuples, device IDs for devices (a tuple's ``<deviceID>`` names the
    device it runs on, not the tuple).
    """
    if selection.all:
        return True
    if not selection:
        return False
    ident = element.get("id")
    if ident is not None and ident in selection.occurrenceIds:
        return True
    if selection.classes:
        klass = _childText(element, _CLASS)
        if klass is not None and klass in selection.classes:
            return True
    tag = element.tag
    if selection.deviceIDs and tag == _DEVICE:
        device = _childText(element, _DEVICE_ID)
        if device is not None and device in selection.deviceIDs:
            return True
    if (selection.uris or selection.schemes) and tag == _TUPLE:
        contact = _childText(element, _CONTACT)
        if contact:
            if identityKey(contact) in selection.uris:
                return True
            scheme, colon, _ = contact.partition(":")
            if colon and scheme.lower() in selection.schemes:
                return True
    return False


def _granted(
    element: etree._Element, permissions: Permissions, always: frozenset[str]
) -> bool:
    """Whether a presence attribute (a child of a provided element) is shown."""
    tag = element.tag
    if tag in always or permissions.allAttributes:
        return True
    name = _GRANTED_BY.get(tag)
    if name is not None:
        return name in permissions.attributes
    if tag == _USER_INPUT:
        return permissions.userInput > UserInput.FALSE
    qname = etree.QName(element)
    return (qname.namespace or "", qname.localname) in permissions.unknownAttributes


def _prune(
    element: etree._Element, permissions: Permissions, always: frozenset[str]
) -> None:
    """Remove from a copied element what the permissions do not provide."""
    for child in list(element):
        if not isinstance(child.tag, str) or not _granted(child, permissions, always):
            element.remove(child)
        elif child.tag == _STATUS:
            _prune(child, permissions, frozenset({_BASIC}))
        elif child.tag == _USER_INPUT and not permissions.allAttributes:
            keeps = _USER_INPUT_KEEPS.get(permissions.userInput)
            if keeps is not None:
                for attribute in list(child.attrib):
                    if attribute not in keeps:
                        del child.attrib[attribute]


def transform(pidf: bytes, permissions: Permissions) -> bytes:
    """The document a watcher with these permissions sees.

    Args:
        pidf: the presentity's (aggregated) PIDF document.
        permissions: the watcher's combined permissions (`Outcome`).

    Returns:
        A PIDF document with the same ``entity`` holding exactly what the
        permissions provide.

    Raises:
        NotPIDF: ``pidf`` is not a well-formed PIDF document.
    """
    source = _parsePIDF(pidf)
    nsmap: dict[str | None, str] = {None: PIDF_NS}
    for prefix, uri in source.nsmap.items():
        if prefix is not None and uri != PIDF_NS:
            nsmap[prefix] = uri
    root = etree.Element(_PIDF + "presence", nsmap=nsmap)  # type: ignore[arg-type]
    entity = source.get("entity")
    if entity is not None:
        root.set("entity", entity)
    for child in source:
        if not isinstance(child.tag, str):
            continue
        tag = child.tag
        if tag == _TUPLE:
            selection = permissions.services
        elif tag == _PERSON:
            selection = permissions.persons
        elif tag == _DEVICE:
            selection = permissions.devices
        else:
            if _granted(child, permissions, _NONE):
                root.append(deepcopy(child))
            continue
        if _selected(child, selection):
            copy = deepcopy(child)
            _prune(copy, permissions, _ALWAYS[tag])
            root.append(copy)
    etree.cleanup_namespaces(root, top_nsmap=nsmap)  # type: ignore[arg-type]
    return serialise(root)


def currentSphere(pidf: bytes) -> str | None:
    """The presentity's current sphere (RFC 4480 section 3.2), for conditions.

    The RPID ``<sphere>`` of the first person that has one, else the first
    anywhere in the document: its text (``<rpid:sphere>work</rpid:sphere>``)
    or the name of its element (``<rpid:sphere><rpid:work/></rpid:sphere>``).
    ``None`` when there is none, or the document cannot be read: then no
    ``sphere`` condition holds.
    """
    try:
        root = _parsePIDF(pidf)
    except NotPIDF:
        return None
    sphere = None
    for person in root.iterchildren(_PERSON):
        sphere = person.find(_RPID + "sphere")
        if sphere is not None:
            break
    else:
        sphere = next(root.iter(_RPID + "sphere"), None)
    if sphere is None:
        return None
    text = elementText(sphere)
    if text:
        return text
    for child in sphere:
        if isinstance(child.tag, str):
            return etree.QName(child).localname
    return None


def newestSphere(documents: Sequence[bytes]) -> str | None:
    """The current sphere of the newest document that has one.

    ``documents`` come oldest first (a presentity's publications in the
    order they were received). The sphere rules read it this way rather
    than in the aggregate, whose first person is the oldest publication's:
    the sphere (RFC 4480 section 3.2) is the current state and role of the
    person, and the newest publication is the current one.
    """
    for document in reversed(documents):
        sphere = currentSphere(document)
        if sphere is not None:
            return sphere
    return None
