"""Safe XML parsing for event bodies: no entities, no DTDs, no network."""

from __future__ import annotations

from typing import Final

from lxml import etree

from presence.sip.errors import BadRequest

_PARSER: Final = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_blank_text=True,
)

#: The largest body parsed, a guard on top of the server's body limit.
MAX_XML_SIZE: Final = 256 * 1024


def parseXML(body: bytes, what: str) -> etree._Element:
    """Parse a body into its root element.

    Raises:
        BadRequest: the body is not well-formed XML, or declares a DTD.
    """
    if len(body) > MAX_XML_SIZE:
        raise BadRequest(f"{what} body too large")
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError as e:
        raise BadRequest(f"malformed {what}: {e.msg}") from None
    if root is None:
        raise BadRequest(f"empty {what}")
    tree = root.getroottree()
    if tree.docinfo.internalDTD is not None or tree.docinfo.doctype:
        raise BadRequest(f"{what} must not declare a DTD")
    return root


def serialise(root: etree._Element) -> bytes:
    """Write an element as a UTF-8 document with an XML declaration."""
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")
