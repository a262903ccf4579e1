"""A user's resource lists (RFC 4826), as ``external-list`` conditions read them.

`resourceLists` turns a resource-lists document into the mapping that
`presence.xcap.rules.RuleSet.evaluate` takes: each list, by its path of
``name`` attributes (``friends``; ``friends/close`` for a list inside it), to
the `presence.xcap.rules.identityKey` forms of its members. A list's members
are its ``<entry>`` URIs and those of the lists inside it. ``<entry-ref>``
and ``<external>`` point at entries and lists elsewhere and are not
followed: the people they name are not members here, which can only keep
presence from a watcher, never show it to one more.
"""

from __future__ import annotations

from typing import Final

from lxml import etree

from presence.packages.xml import parseXML
from presence.sip.errors import BadRequest
from presence.xcap.rules import RulesError, identityKey

#: RFC 4826 resource lists.
RL_NS: Final = "urn:ietf:params:xml:ns:resource-lists"
_RL: Final = "{" + RL_NS + "}"


def resourceLists(document: bytes) -> dict[str, frozenset[str]]:
    """The lists of a resource-lists document, by path, with their members.

    Raises:
        RulesError: the document cannot be read. The caller fails closed by
            giving no lists: no watcher is a member of any.
    """
    try:
        root = parseXML(document, "resource-lists")
    except BadRequest as e:
        raise RulesError(e.reason) from None
    if root.tag != _RL + "resource-lists":
        raise RulesError(
            "the root must be <resource-lists> in the resource-lists namespace"
        )
    lists: dict[str, frozenset[str]] = {}
    for child in root.iterchildren(_RL + "list"):
        _collect(child, (), lists)
    return lists


def _collect(
    element: etree._Element,
    parent: tuple[str, ...] | None,
    lists: dict[str, frozenset[str]],
) -> frozenset[str]:
    """Record a list (and those inside it); return its members.

    ``parent`` is the path of the enclosing lists, or ``None`` when one of
    them has no name: such a list cannot be pointed at, nor can any list
    inside it, but its members still belong to the enclosing ones.
    """
    name = element.get("name")
    path = None if parent is None or name is None else (*parent, name)
    members: set[str] = set()
    for child in element:
        if child.tag == _RL + "entry":
            uri = child.get("uri")
            if uri is not None and uri.strip():
                members.add(identityKey(uri))
        elif child.tag == _RL + "list":
            members |= _collect(child, path, lists)
    result = frozenset(members)
    if path is not None:
        key = "/".join(path)
        lists[key] = lists.get(key, frozenset()) | result
    return result
