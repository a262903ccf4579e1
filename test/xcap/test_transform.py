"""What a watcher sees: `presence.xcap.transform` (RFC 5025 section 3.3).

Every transformation is applied to one rich PIDF document (four tuples with
classes, service URIs, device IDs and RPID attributes, two persons with
every RPID person attribute, two devices, notes at every level and elements
of namespaces nobody knows), and each test states the whole document the
watcher gets, compared after C14N 2.0 canonicalisation (which ignores where
namespaces are declared and the white space between elements, nothing
else).
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st
from lxml import etree
from twisted.trial.unittest import SynchronousTestCase

from presence.packages.presence import aggregate, offlineDocument
from presence.xcap.rules import (
    BOOLEAN_PERMISSIONS,
    EVERYTHING,
    NO_PERMISSIONS,
    Permissions,
    Selection,
    UserInput,
    Watcher,
    parseRuleSet,
)
from presence.xcap.transform import NotPIDF, currentSphere, transform

PIDF = "urn:ietf:params:xml:ns:pidf"
DM = "urn:ietf:params:xml:ns:pidf:data-model"
RPID = "urn:ietf:params:xml:ns:pidf:rpid"
CAPS = "urn:ietf:params:xml:ns:pidf:caps"
GP = "urn:ietf:params:xml:ns:pidf:geopriv10"
LT = "urn:ietf:params:xml:ns:location-type"
FOO = "urn:vendor-specific:foo-namespace"
ENTITY = "sip:bob@example.com"

DECLARATIONS = (
    f'xmlns="{PIDF}" xmlns:dm="{DM}" xmlns:rpid="{RPID}" xmlns:caps="{CAPS}" '
    f'xmlns:gp="{GP}" xmlns:lt="{LT}" xmlns:foo="{FOO}"'
)

GEOPRIV = "<gp:geopriv><gp:location-info>Paris</gp:location-info></gp:geopriv>"

#: The children of each element, by the names the tests keep them by; the
#: ``basic`` of a tuple is its status, ``geopriv`` more inside the status.
#: ``user-input`` is written by `userInput`.
TUPLES: list[tuple[str, list[tuple[str, str]]]] = [
    (
        "t-sip",
        [
            ("status", ""),
            ("class", "<rpid:class>business</rpid:class>"),
            (
                "relationship",
                "<rpid:relationship><rpid:assistant/></rpid:relationship>",
            ),
            (
                "service-class",
                "<rpid:service-class><rpid:electronic/></rpid:service-class>",
            ),
            (
                "status-icon",
                "<rpid:status-icon>http://example.com/phone.png</rpid:status-icon>",
            ),
            ("user-input", ""),
            ("privacy", "<rpid:privacy><rpid:audio/></rpid:privacy>"),
            ("deviceID", "<dm:deviceID>urn:uuid:d1</dm:deviceID>"),
            (
                "servcaps",
                "<caps:servcaps><caps:audio>true</caps:audio></caps:servcaps>",
            ),
            ("contact", '<contact priority="0.8">sip:bob@192.0.2.10</contact>'),
            ("note", '<note xml:lang="en">Desk phone</note>'),
            ("timestamp", "<timestamp>2024-06-01T11:59:00Z</timestamp>"),
        ],
    ),
    (
        "t-mail",
        [
            ("status", ""),
            ("class", "<rpid:class>personal</rpid:class>"),
            ("contact", "<contact>mailto:bob@example.com</contact>"),
        ],
    ),
    (
        "t-im",
        [
            ("status", ""),
            ("contact", "<contact>im:bob@example.com</contact>"),
            ("note", "<note>Chat</note>"),
        ],
    ),
    ("t-bare", [("status", "")]),
]
PERSONS: list[tuple[str, list[tuple[str, str]]]] = [
    (
        "p1",
        [
            ("activities", "<rpid:activities><rpid:meeting/></rpid:activities>"),
            ("class", "<rpid:class>work</rpid:class>"),
            ("mood", "<rpid:mood><rpid:note>grr</rpid:note><rpid:angry/></rpid:mood>"),
            (
                "place-is",
                "<rpid:place-is><rpid:audio><rpid:noisy/></rpid:audio></rpid:place-is>",
            ),
            ("place-type", "<rpid:place-type><lt:office/></rpid:place-type>"),
            ("privacy", "<rpid:privacy><rpid:text/></rpid:privacy>"),
            ("sphere", "<rpid:sphere>work</rpid:sphere>"),
            (
                "status-icon",
                "<rpid:status-icon>http://example.com/p.png</rpid:status-icon>",
            ),
            (
                "time-offset",
                '<rpid:time-offset description="Paris">120</rpid:time-offset>',
            ),
            ("user-input", ""),
            ("foo", "<foo:foo>secret</foo:foo>"),
            ("note", "<dm:note>In a meeting</dm:note>"),
            ("timestamp", "<dm:timestamp>2024-06-01T11:58:00Z</dm:timestamp>"),
        ],
    ),
    (
        "p2",
        [
            ("activities", "<rpid:activities><rpid:away/></rpid:activities>"),
            ("class", "<rpid:class>home</rpid:class>"),
            ("sphere", "<rpid:sphere><rpid:home/></rpid:sphere>"),
        ],
    ),
]
DEVICES: list[tuple[str, list[tuple[str, str]]]] = [
    (
        "d1",
        [
            ("class", "<rpid:class>desk</rpid:class>"),
            ("user-input", ""),
            ("battery", "<foo:battery>80</foo:battery>"),
            ("deviceID", "<dm:deviceID>urn:uuid:d1</dm:deviceID>"),
            ("note", "<dm:note>On the desk</dm:note>"),
            ("timestamp", "<dm:timestamp>2024-06-01T11:57:00Z</dm:timestamp>"),
        ],
    ),
    (
        "d2",
        [
            ("class", "<rpid:class>mobile</rpid:class>"),
            ("deviceID", "<dm:deviceID>urn:uuid:d2</dm:deviceID>"),
        ],
    ),
]
NOTE = "<note>Back at three</note>"
CARD = "<foo:card>BEGIN:VCARD</foo:card>"

#: What ``user-input`` is in each element, with every attribute.
USER_INPUT = {
    "t-sip": (
        "idle",
        'id="ui1" idle-threshold="600" last-input="2024-06-01T11:50:00Z"',
    ),
    "p1": (
        "active",
        'idle-threshold="900" last-input="2024-06-01T11:59:30Z" foo:x="1"',
    ),
    "d1": ("idle", 'last-input="2024-06-01T10:00:00Z"'),
}
#: Whose status is open.
OPEN = {"t-sip", "t-mail"}

ALWAYS = {
    "tuple": {"status", "contact", "service-class", "timestamp"},
    "dm:person": {"timestamp"},
    "dm:device": {"deviceID", "timestamp"},
}


def userInput(ident: str, level: UserInput) -> str:
    """The ``user-input`` of an element as ``level`` keeps it."""
    value, attributes = USER_INPUT[ident]
    keep = {
        UserInput.BARE: {"id"},
        UserInput.THRESHOLDS: {"id", "idle-threshold"},
    }.get(level)
    if keep is not None:
        attributes = " ".join(
            a for a in attributes.split() if a.partition("=")[0] in keep
        )
    space = " " if attributes else ""
    return f"<rpid:user-input{space}{attributes}>{value}</rpid:user-input>"


def element(
    tag: str,
    ident: str,
    parts: list[tuple[str, str]],
    keep: set[str],
    level: UserInput = UserInput.FULL,
) -> str:
    """A tuple, person or device with the children named in ``keep``.

    Every child of it is kept with ``keep={"*"}``.
    """
    children = []
    for name, snippet in parts:
        if keep != {"*"} and name not in keep and name not in ALWAYS[tag]:
            continue
        if name == "status":
            basic = "open" if ident in OPEN else "closed"
            geo = (
                GEOPRIV
                if ident == "t-sip" and ("geopriv" in keep or keep == {"*"})
                else ""
            )
            snippet = f"<status><basic>{basic}</basic>{geo}</status>"
        elif name == "user-input":
            snippet = userInput(ident, level)
        children.append(snippet)
    return f'<{tag} id="{ident}">{"".join(children)}</{tag}>'


def document(*children: str, declarations: str = DECLARATIONS) -> str:
    """A presence document with these children."""
    return f'<presence {declarations} entity="{ENTITY}">{"".join(children)}</presence>'


def everything(keep: set[str], level: UserInput = UserInput.FULL) -> list[str]:
    """Every tuple, note, person, device and card, with the children in keep."""
    out = [element("tuple", i, p, keep, level) for i, p in TUPLES]
    if keep == {"*"} or "note" in keep:
        out.append(NOTE)
    out += [element("dm:person", i, p, keep, level) for i, p in PERSONS]
    out += [element("dm:device", i, p, keep, level) for i, p in DEVICES]
    if keep == {"*"} or "card" in keep:
        out.append(CARD)
    return out


#: The document every test transforms, with a comment and a processing
#: instruction thrown in, and an attribute of the root besides ``entity``.
SOURCE = (
    document(*everything({"*"}))
    .replace("<note>Back", "<!-- hi --><?pi x?><note>Back")
    .replace(f'entity="{ENTITY}"', f'entity="{ENTITY}" foo:version="3"')
    .encode()
)
ALL = Selection(all=True)


def canonical(xml: bytes | str) -> str:
    """The C14N 2.0 form, white space between elements stripped."""
    if isinstance(xml, str):
        xml = xml.encode()
    text: str = etree.canonicalize(etree.fromstring(xml), strip_text=True)
    return text


class TransformTestCase(SynchronousTestCase):
    """Compares transformed documents."""

    def assertSees(self, permissions: Permissions, *expected: str) -> bytes:
        """The watcher with these permissions sees exactly these children."""
        actual = transform(SOURCE, permissions)
        self.assertEqual(canonical(actual), canonical(document(*expected)))
        return actual


class NothingTests(TransformTestCase):
    """RFC 5025 section 3.3: nothing is provided unless a permission says so."""

    def test_noPermissions(self) -> None:
        """No ``provide-*`` at all: a presence element with its entity.

        RFC 5025 section 3.3.1: access to tuples, persons and devices is
        granted by provide-services, provide-persons and provide-devices;
        without them the watcher is given none.
        """
        actual = self.assertSees(NO_PERMISSIONS)
        self.assertEqual(
            actual,
            b"<?xml version='1.0' encoding='UTF-8'?>\n"
            b'<presence xmlns="urn:ietf:params:xml:ns:pidf" '
            b'entity="sip:bob@example.com"/>',
        )

    def test_attributesWithoutElements(self) -> None:
        """Attribute permissions alone show nothing.

        There is no element to show them in: RFC 5025 section 3.3.2 applies
        to the elements provided.
        """
        permissions = Permissions(
            attributes=frozenset(BOOLEAN_PERMISSIONS.values()) - {"note"},
            userInput=UserInput.FULL,
            unknownAttributes=frozenset({(FOO, "foo")}),
        )
        self.assertSees(permissions)


class ServicesTests(TransformTestCase):
    """RFC 5025 section 3.3.1.3: ``provide-services``."""

    def test_allServices(self) -> None:
        """``all-services``: every tuple, with what is always provided.

        RFC 5025 section 3.3.2: "The <contact>, <service-class>, <basic>
        status, and <timestamp> elements in all <tuple> elements, if present,
        are provided to watchers."
        """
        self.assertSees(
            Permissions(services=ALL),
            *[element("tuple", i, p, set()) for i, p in TUPLES],
        )

    def test_serviceURI(self) -> None:
        """``service-uri``: the tuples whose contact is that URI."""
        for uri in ("sip:bob@192.0.2.10", " SIP:bob@192.0.2.10 "):
            selection = Selection(uris=frozenset({"sip:bob@192.0.2.10"}))
            self.assertSees(
                Permissions(services=selection),
                element("tuple", "t-sip", TUPLES[0][1], set()),
            )
            del uri
        selection = Selection(uris=frozenset({"sip:bob@192.0.2.11"}))
        self.assertSees(Permissions(services=selection))

    def test_serviceURIFromRules(self) -> None:
        """A ``service-uri`` in a rule compares as a URI (host case ignored)."""
        rules = parseRuleSet(
            [
                b'<ruleset xmlns="urn:ietf:params:xml:ns:common-policy" '
                b'xmlns:pr="urn:ietf:params:xml:ns:pres-rules"><rule id="a">'
                b"<transformations><pr:provide-services>"
                b"<pr:service-uri>im:bob@EXAMPLE.com</pr:service-uri>"
                b"</pr:provide-services></transformations></rule></ruleset>"
            ]
        )
        permissions = rules.evaluate(Watcher.fromURI("sip:a@b"), 0).permissions
        self.assertSees(permissions, element("tuple", "t-im", TUPLES[2][1], set()))

    def test_serviceURIScheme(self) -> None:
        """``service-uri-scheme``: the tuples whose contact has that scheme."""
        self.assertSees(
            Permissions(services=Selection(schemes=frozenset({"mailto", "im"}))),
            element("tuple", "t-mail", TUPLES[1][1], set()),
            element("tuple", "t-im", TUPLES[2][1], set()),
        )

    def test_occurrenceId(self) -> None:
        """``occurrence-id``: the tuple with that ``id``."""
        self.assertSees(
            Permissions(services=Selection(occurrenceIds=frozenset({"t-bare"}))),
            element("tuple", "t-bare", TUPLES[3][1], set()),
        )

    def test_class(self) -> None:
        """``class``: the tuples whose RPID ``<class>`` is that value."""
        self.assertSees(
            Permissions(services=Selection(classes=frozenset({"personal"}))),
            element("tuple", "t-mail", TUPLES[1][1], set()),
        )

    def test_anyCriterion(self) -> None:
        """A tuple meeting any one criterion is provided, once."""
        selection = Selection(
            schemes=frozenset({"sip"}),
            classes=frozenset({"business", "personal"}),
            occurrenceIds=frozenset({"t-sip"}),
        )
        self.assertSees(
            Permissions(services=selection),
            element("tuple", "t-sip", TUPLES[0][1], set()),
            element("tuple", "t-mail", TUPLES[1][1], set()),
        )

    def test_noContact(self) -> None:
        """A tuple without a contact has no service URI or scheme to match."""
        selection = Selection(schemes=frozenset({""}), uris=frozenset({""}))
        self.assertSees(Permissions(services=selection))


class PersonsTests(TransformTestCase):
    """RFC 5025 section 3.3.1.2: ``provide-persons``."""

    def test_allPersons(self) -> None:
        """``all-persons``: every person, with its ``<timestamp>``.

        RFC 5025 section 3.3.2: "The <timestamp> element in all <person>
        elements, if present, is provided to watchers."
        """
        self.assertSees(
            Permissions(persons=ALL),
            *[element("dm:person", i, p, set()) for i, p in PERSONS],
        )

    def test_occurrenceId(self) -> None:
        """``occurrence-id``: the person with that ``id``."""
        self.assertSees(
            Permissions(persons=Selection(occurrenceIds=frozenset({"p2"}))),
            element("dm:person", "p2", PERSONS[1][1], set()),
        )

    def test_class(self) -> None:
        """``class``: the persons whose RPID ``<class>`` is that value."""
        self.assertSees(
            Permissions(persons=Selection(classes=frozenset({"work"}))),
            element("dm:person", "p1", PERSONS[0][1], set()),
        )


class DevicesTests(TransformTestCase):
    """RFC 5025 section 3.3.1.1: ``provide-devices``."""

    def test_allDevices(self) -> None:
        """``all-devices``: every device, with ``<deviceID>`` and ``<timestamp>``.

        RFC 5025 section 3.3.2: "The <timestamp> and <deviceID> elements in
        all <device> elements, if present, are provided to all watchers."
        """
        self.assertSees(
            Permissions(devices=ALL),
            *[element("dm:device", i, p, set()) for i, p in DEVICES],
        )

    def test_deviceID(self) -> None:
        """``deviceID``: the device with that device ID."""
        self.assertSees(
            Permissions(devices=Selection(deviceIDs=frozenset({"urn:uuid:d2"}))),
            element("dm:device", "d2", DEVICES[1][1], set()),
        )

    def test_occurrenceId(self) -> None:
        """``occurrence-id``: the device with that ``id``."""
        self.assertSees(
            Permissions(devices=Selection(occurrenceIds=frozenset({"d1"}))),
            element("dm:device", "d1", DEVICES[0][1], set()),
        )

    def test_class(self) -> None:
        """``class``: the devices whose RPID ``<class>`` is that value."""
        self.assertSees(
            Permissions(devices=Selection(classes=frozenset({"mobile"}))),
            element("dm:device", "d2", DEVICES[1][1], set()),
        )

    def test_kindsApart(self) -> None:
        """A criterion selects only elements of its own kind."""
        permissions = Permissions(
            services=Selection(
                occurrenceIds=frozenset({"p1", "d1"}),
                deviceIDs=frozenset({"urn:uuid:d1"}),
            ),
            persons=Selection(schemes=frozenset({"sip"})),
            devices=Selection(
                classes=frozenset({"business"}), uris=frozenset({"sip:bob@192.0.2.10"})
            ),
        )
        self.assertSees(permissions)


def provide(*names: str) -> Permissions:
    """Every element, and the boolean permissions named."""
    return Permissions(
        services=ALL, persons=ALL, devices=ALL, attributes=frozenset(names)
    )


class AttributesTests(TransformTestCase):
    """RFC 5025 section 3.3.2: each attribute permission, on every element.

    RFC 5025 section 3.3: the permissions of 3.3.2 "provide access to
    presence attributes, regardless of the element to which they belong".
    """

    def test_each(self) -> None:
        """Each boolean permission adds its attribute wherever it occurs."""
        for name in BOOLEAN_PERMISSIONS.values():
            self.assertSees(provide(name), *everything({name}))

    def test_activities(self) -> None:
        """``provide-activities``: RPID ``<activities>`` (RFC 4480 3.2)."""
        self.assertSees(
            provide("activities"),
            *[element("tuple", i, p, set()) for i, p in TUPLES],
            element("dm:person", "p1", PERSONS[0][1], {"activities"}),
            element("dm:person", "p2", PERSONS[1][1], {"activities"}),
            *[element("dm:device", i, p, set()) for i, p in DEVICES],
        )

    def test_deviceIDOfTuple(self) -> None:
        """``provide-deviceID``: the ``<deviceID>`` of a tuple.

        It names the device the service runs on; a device's own is always
        provided.
        """
        self.assertSees(
            Permissions(services=ALL, attributes=frozenset({"deviceID"})),
            element("tuple", "t-sip", TUPLES[0][1], {"deviceID"}),
            *[element("tuple", i, p, set()) for i, p in TUPLES[1:]],
        )

    def test_note(self) -> None:
        """``provide-note``: notes of tuples, persons, devices and presence."""
        self.assertSees(
            provide("note"),
            *[element("tuple", i, p, {"note"}) for i, p in TUPLES],
            NOTE,
            *[element("dm:person", i, p, {"note"}) for i, p in PERSONS],
            *[element("dm:device", i, p, {"note"}) for i, p in DEVICES],
        )

    def test_severalTogether(self) -> None:
        """Several permissions: the union of what each shows."""
        names = {"mood", "sphere", "status-icon", "privacy"}
        self.assertSees(provide(*names), *everything(names))

    def test_presenceNoteAlone(self) -> None:
        """The note of the presence element needs no element selected."""
        self.assertSees(Permissions(attributes=frozenset({"note"})), NOTE)


class UserInputTests(TransformTestCase):
    """RFC 5025 section 3.3.2.12: ``provide-user-input``.

    "false: This value indicates that the <user-input> element is removed
    from the document." "bare: ... the <user-input> element is to be
    retained. However, any "idle-threshold" and "since" attributes are to be
    removed." "thresholds: ... only the "idle-threshold" attribute is to be
    retained." "full: ... the <user-input> element is to be retained,
    including any attributes."
    """

    def test_levels(self) -> None:
        """Each level, on tuples, persons and devices.

        ``since`` is RPID's ``last-input``; ``bare`` keeps only ``id``,
        ``thresholds`` ``id`` and ``idle-threshold``.
        """
        for level in (UserInput.BARE, UserInput.THRESHOLDS, UserInput.FULL):
            permissions = Permissions(
                services=ALL, persons=ALL, devices=ALL, userInput=level
            )
            self.assertSees(permissions, *everything({"user-input"}, level))
        self.assertSees(
            Permissions(services=ALL, persons=ALL, devices=ALL), *everything(set())
        )

    def test_bare(self) -> None:
        """``bare`` spelled out for the tuple: the value and its ``id``."""
        actual = transform(SOURCE, Permissions(services=ALL, userInput=UserInput.BARE))
        self.assertIn(b'<rpid:user-input id="ui1">idle</rpid:user-input>', actual)
        self.assertNotIn(b"threshold", actual)
        self.assertNotIn(b"last-input", actual)


class UnknownAttributesTests(TransformTestCase):
    """RFC 5025 section 3.3.2.14: ``provide-unknown-attribute``."""

    def test_byNamespaceAndName(self) -> None:
        """An element of its namespace and name, wherever it is."""
        permissions = Permissions(
            services=ALL,
            persons=ALL,
            devices=ALL,
            unknownAttributes=frozenset(
                {(FOO, "foo"), (CAPS, "servcaps"), (FOO, "card"), (GP, "geopriv")}
            ),
        )
        self.assertSees(
            permissions, *everything({"foo", "servcaps", "card", "geopriv"})
        )

    def test_nameAndNamespaceBoth(self) -> None:
        """The same name in another namespace is another attribute."""
        permissions = Permissions(
            persons=ALL,
            unknownAttributes=frozenset({(CAPS, "foo"), (FOO, "bar")}),
        )
        self.assertSees(
            permissions, *[element("dm:person", i, p, set()) for i, p in PERSONS]
        )

    def test_notForKnownAttributes(self) -> None:
        """It cannot grant an attribute that has its own permission."""
        permissions = Permissions(
            persons=ALL,
            unknownAttributes=frozenset(
                {(RPID, "mood"), (RPID, "user-input"), (PIDF, "note"), (DM, "note")}
            ),
        )
        self.assertSees(
            permissions, *[element("dm:person", i, p, set()) for i, p in PERSONS]
        )


class AllAttributesTests(TransformTestCase):
    """RFC 5025 section 3.3.2.15: ``provide-all-attributes``."""

    def test_everything(self) -> None:
        """With every element too, the watcher sees the whole document.

        All but the comment, the processing instruction and the root's
        other attributes).
        """
        permissions = Permissions(
            services=ALL, persons=ALL, devices=ALL, allAttributes=True
        )
        self.assertSees(permissions, *everything({"*"}))

    def test_onlyProvidedElements(self) -> None:
        """All the attributes of the elements provided, and no more elements."""
        permissions = Permissions(
            persons=Selection(occurrenceIds=frozenset({"p2"})), allAttributes=True
        )
        self.assertSees(
            permissions,
            NOTE,
            element("dm:person", "p2", PERSONS[1][1], {"*"}),
            CARD,
        )


class DocumentTests(TransformTestCase):
    """The output as a document: entity, namespaces, determinism."""

    def test_deterministic(self) -> None:
        """The same document and equal permissions give the same bytes."""
        first = transform(SOURCE, provide("mood", "note"))
        self.assertEqual(transform(SOURCE, provide("note", "mood")), first)
        self.assertTrue(first.startswith(b"<?xml version='1.0' encoding='UTF-8'?>\n"))
        root = etree.fromstring(first)
        self.assertEqual(root.nsmap[None], PIDF)
        self.assertEqual(dict(root.attrib), {"entity": ENTITY})

    def test_namespacesDeclaredOnce(self) -> None:
        """Namespaces in use are declared on the root; unused ones not at all."""
        actual = transform(
            SOURCE, Permissions(persons=ALL, attributes=frozenset({"mood"}))
        )
        root = etree.fromstring(actual)
        self.assertEqual(root.nsmap, {None: PIDF, "dm": DM, "rpid": RPID})
        self.assertEqual(actual.count(b"xmlns"), 3)

    def test_prefixesOfTheSource(self) -> None:
        """PIDF under a prefix comes out in the default namespace.

        Other prefixes are kept.
        """
        source = (
            f'<p:presence xmlns:p="{PIDF}" xmlns:r="{RPID}" xmlns:d="{DM}" '
            f'entity="{ENTITY}"><p:tuple id="a"><p:status><p:basic>open</p:basic>'
            "</p:status><r:class>x</r:class></p:tuple>"
            '<d:person id="b"><r:mood><r:happy/></r:mood></d:person></p:presence>'
        ).encode()
        actual = transform(source, provide("mood", "class"))
        self.assertEqual(
            canonical(actual),
            canonical(
                f'<presence xmlns="{PIDF}" xmlns:r="{RPID}" xmlns:d="{DM}" '
                f'entity="{ENTITY}"><tuple id="a"><status><basic>open</basic>'
                "</status><r:class>x</r:class></tuple>"
                '<d:person id="b"><r:mood><r:happy/></r:mood></d:person></presence>'
            ),
        )
        self.assertIn(b'<presence xmlns="urn:ietf:params:xml:ns:pidf"', actual)

    def test_aggregated(self) -> None:
        """Works on the presence package's aggregate and offline documents.

        The offline document is what a politely blocked watcher is given.
        """
        body = aggregate(ENTITY, [SOURCE])
        self.assertEqual(
            canonical(transform(body, provide("mood"))),
            canonical(transform(SOURCE, provide("mood"))),
        )
        offline = offlineDocument(ENTITY)
        self.assertEqual(
            canonical(transform(offline, Permissions(services=ALL))), canonical(offline)
        )

    def test_notPIDF(self) -> None:
        """A body that is not PIDF raises NotPIDF."""
        for body in [b"<presence", b"<presence/>", f'<tuple xmlns="{PIDF}"/>'.encode()]:
            self.assertRaises(NotPIDF, transform, body, NO_PERMISSIONS)

    def test_rfc5025Example(self) -> None:
        """The permissions of RFC 5025 section 6's example document.

        Services of sip and mailto URIs, all persons with their activities,
        bare user input and the vendor's foo attribute.
        """
        permissions = Permissions(
            services=Selection(schemes=frozenset({"sip", "mailto"})),
            persons=EVERYTHING,
            attributes=frozenset({"activities"}),
            userInput=UserInput.BARE,
            unknownAttributes=frozenset({(FOO, "foo")}),
        )
        self.assertSees(
            permissions,
            element("tuple", "t-sip", TUPLES[0][1], {"user-input"}, UserInput.BARE),
            element("tuple", "t-mail", TUPLES[1][1], set()),
            element(
                "dm:person",
                "p1",
                PERSONS[0][1],
                {"activities", "user-input", "foo"},
                UserInput.BARE,
            ),
            element("dm:person", "p2", PERSONS[1][1], {"activities"}),
        )


_SELECTIONS = st.builds(
    Selection,
    all=st.booleans(),
    uris=st.frozensets(st.sampled_from(["sip:bob@192.0.2.10", "im:bob@example.com"])),
    schemes=st.frozensets(st.sampled_from(["sip", "mailto", "im"])),
    deviceIDs=st.frozensets(st.sampled_from(["urn:uuid:d1", "urn:uuid:d2"])),
    occurrenceIds=st.frozensets(st.sampled_from(["t-sip", "t-im", "p1", "d2"])),
    classes=st.frozensets(st.sampled_from(["business", "work", "mobile", "home"])),
)
_PERMISSIONS = st.builds(
    Permissions,
    services=_SELECTIONS,
    persons=_SELECTIONS,
    devices=_SELECTIONS,
    attributes=st.frozensets(st.sampled_from(sorted(BOOLEAN_PERMISSIONS.values()))),
    userInput=st.sampled_from(UserInput),
    unknownAttributes=st.frozensets(
        st.sampled_from([(FOO, "foo"), (CAPS, "servcaps"), (FOO, "card")])
    ),
    allAttributes=st.booleans(),
)


class PropertyTests(SynchronousTestCase):
    """What holds for any permissions.

    Both properties need the watcher to see ``<class>``: an element
    provided because of its class, shown without it, can no longer be
    told by its class.
    """

    @given(_PERMISSIONS)
    def test_idempotent(self, permissions: Permissions) -> None:
        """Transforming what a watcher sees again changes nothing."""
        permissions = withClass(permissions)
        once = transform(SOURCE, permissions)
        self.assertEqual(transform(once, permissions), once)

    @given(_PERMISSIONS, _PERMISSIONS)
    def test_moreShowsMore(self, first: Permissions, second: Permissions) -> None:
        """Combined permissions show at least what each shows.

        RFC 4745 section 10: rules only ever add to what is permitted.
        """
        both = transform(SOURCE, withClass(first.union(second)))
        for one in (first, second):
            self.assertEqual(transform(both, one), transform(SOURCE, one))


def withClass(permissions: Permissions) -> Permissions:
    """The same permissions, with ``provide-class``."""
    return replace(permissions, attributes=permissions.attributes | {"class"})


class SphereTests(SynchronousTestCase):
    """`currentSphere`: RFC 4480 section 3.2's ``<sphere>`` of the presentity."""

    def pidf(self, *children: str) -> bytes:
        """A PIDF document with these children."""
        return document(*children).encode()

    def test_text(self) -> None:
        """``<rpid:sphere>work</rpid:sphere>``."""
        self.assertEqual(currentSphere(SOURCE), "work")

    def test_element(self) -> None:
        """``<rpid:sphere><rpid:home/></rpid:sphere>``."""
        body = self.pidf(element("dm:person", "p2", PERSONS[1][1], {"sphere"}))
        self.assertEqual(currentSphere(body), "home")

    def test_firstPerson(self) -> None:
        """The first person with a sphere; persons before other elements."""
        body = self.pidf(
            '<tuple id="t"><status><basic>open</basic></status>'
            "<rpid:sphere>tuple</rpid:sphere></tuple>",
            '<dm:person id="a"><rpid:mood><rpid:happy/></rpid:mood></dm:person>',
            '<dm:person id="b"><rpid:sphere> <!-- x -->home </rpid:sphere></dm:person>',
            '<dm:person id="c"><rpid:sphere>work</rpid:sphere></dm:person>',
        )
        self.assertEqual(currentSphere(body), "home")

    def test_elsewhere(self) -> None:
        """Without a person's sphere, any sphere in the document."""
        body = self.pidf(
            '<tuple id="t"><status><basic>open</basic></status>'
            "<rpid:sphere><foo:lab/></rpid:sphere></tuple>"
        )
        self.assertEqual(currentSphere(body), "lab")

    def test_none(self) -> None:
        """No sphere, an empty one, or a body that is not PIDF: ``None``."""
        for body in [
            self.pidf(),
            self.pidf('<dm:person id="a"><rpid:sphere/></dm:person>'),
            b"<presence",
            b"<other/>",
        ]:
            self.assertIsNone(currentSphere(body))

    def test_drivesRules(self) -> None:
        """The sphere read from the PIDF decides a ``sphere`` condition."""
        rules = parseRuleSet(
            [
                b'<ruleset xmlns="urn:ietf:params:xml:ns:common-policy" '
                b'xmlns:pr="urn:ietf:params:xml:ns:pres-rules"><rule id="a">'
                b'<conditions><sphere value="work"/></conditions><actions>'
                b"<pr:sub-handling>allow</pr:sub-handling></actions></rule></ruleset>"
            ]
        )
        watcher = Watcher.fromURI("sip:alice@example.com")
        self.assertEqual(
            rules.evaluate(watcher, 0, currentSphere(SOURCE)).subHandling, 30
        )
        home = self.pidf(element("dm:person", "p2", PERSONS[1][1], {"sphere"}))
        self.assertEqual(rules.evaluate(watcher, 0, currentSphere(home)).subHandling, 0)


#: Every child of the source document, to build others from.
_CHILDREN = everything({"*"})


class FuzzTests(SynchronousTestCase):
    """Whatever the body, `transform` raises only `NotPIDF`."""

    @given(st.binary(max_size=300))
    def test_bytes(self, body: bytes) -> None:
        """Arbitrary bytes: NotPIDF, or a document; currentSphere never fails."""
        try:
            result = transform(body, Permissions(services=ALL, allAttributes=True))
        except NotPIDF:
            pass
        else:
            etree.fromstring(result)
        sphere = currentSphere(body)
        self.assertTrue(sphere is None or isinstance(sphere, str))

    @given(st.lists(st.sampled_from(_CHILDREN), max_size=8), _PERMISSIONS)
    def test_documents(self, children: list[str], permissions: Permissions) -> None:
        """Any mix of the source's elements, repeated or reordered, transforms.

        Every element in the output comes from the input.
        """
        source = document(*children).encode()
        result = transform(source, permissions)
        tags = {e.tag for e in etree.fromstring(source).iter()}
        self.assertLessEqual({e.tag for e in etree.fromstring(result).iter()}, tags)
