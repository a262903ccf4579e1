"""Presence authorization rules: `presence.xcap.rules` and `presence.xcap.lists`.

Parsing (RFC 4745 common policy, RFC 5025 pres-rules, the OMA common-policy
conditions), every condition, the combination of matching rules (RFC 4745
section 10), the defaults, and fuzzing of the parser.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar
from xml.sax.saxutils import escape, quoteattr

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from presence.status import ACTIVE, PENDING, TERMINATED
from presence.xcap.lists import resourceLists
from presence.xcap.rules import (
    ANONYMOUS,
    BLOCK_ALL,
    BLOCKED,
    EVERYTHING,
    NO_PERMISSIONS,
    NO_RULES,
    NOTHING,
    Outcome,
    Permissions,
    RulesError,
    RuleSet,
    Selection,
    SubHandling,
    UserInput,
    Watcher,
    evaluate,
    identityKey,
    listPath,
    parseDateTime,
    parseRuleSet,
)

CP = "urn:ietf:params:xml:ns:common-policy"
PR = "urn:ietf:params:xml:ns:pres-rules"
OCP = "urn:oma:xml:xdm:common-policy"
RL = "urn:ietf:params:xml:ns:resource-lists"

ALICE = Watcher.fromURI("sip:alice@example.com")
BOB = Watcher.fromURI("sip:bob@example.com")
CAROL = Watcher.fromURI("sip:carol@example.org")
DAVE = Watcher.fromURI("sip:dave@sales.example.com")
ERIN = Watcher.fromURI("sip:erin@example.com")

#: 2024-06-01T12:00:00Z.
NOON = datetime(2024, 6, 1, 12, tzinfo=UTC).timestamp()


def ruleset(*rules: str) -> bytes:
    """A pres-rules document with these rules, prefixes cr, pr and ocp."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<cr:ruleset xmlns:cr="{CP}" xmlns:pr="{PR}" xmlns:ocp="{OCP}">'
        + "".join(rules)
        + "</cr:ruleset>"
    ).encode()


def rule(
    conditions: str | None = "",
    handling: str | None = "allow",
    transformations: str = "",
    ident: str = "r",
) -> str:
    """One rule; ``conditions=None`` leaves the conditions element out."""
    out = f'<cr:rule id="{ident}">'
    if conditions is not None:
        out += f"<cr:conditions>{conditions}</cr:conditions>"
    if handling is not None:
        out += f"<cr:actions><pr:sub-handling>{handling}</pr:sub-handling></cr:actions>"
    if transformations:
        out += f"<cr:transformations>{transformations}</cr:transformations>"
    return out + "</cr:rule>"


def one(*ids: str) -> str:
    """An identity condition of ``one`` elements."""
    return (
        "<cr:identity>" + "".join(f'<cr:one id="{i}"/>' for i in ids) + "</cr:identity>"
    )


def decide(
    document: bytes,
    watcher: Watcher,
    now: float = NOON,
    sphere: str | None = None,
    lists: dict[str, frozenset[str]] | None = None,
) -> Outcome:
    """Parse a document and evaluate one watcher."""
    return parseRuleSet([document]).evaluate(watcher, now, sphere, lists or {})


def handling(document: bytes, watcher: Watcher, **kwargs: object) -> SubHandling:
    """The sub-handling a watcher gets."""
    return decide(document, watcher, **kwargs).subHandling  # type: ignore[arg-type]


class DefaultsTests(SynchronousTestCase):
    """No document, no matching rule, and the statuses of the outcomes."""

    def test_noDocumentIsPending(self) -> None:
        """Without any document the watcher waits for the user (pending).

        RFC 5025 leaves the server's behaviour without a document to it; a
        pending subscription is what OpenSIPS and Kamailio give, and the
        presentity hears of the watcher through presence.winfo.
        """
        outcome = evaluate(None, ALICE, NOON)
        self.assertIs(outcome, NO_RULES)
        self.assertEqual((outcome.status, outcome.reason), (PENDING, None))
        self.assertFalse(outcome.documented)
        self.assertEqual(outcome.permissions, NO_PERMISSIONS)

    def test_noMatchingRuleBlocks(self) -> None:
        """A document in which no rule matches blocks the watcher.

        RFC 4745 section 10.2: with no matching rule, a permission takes its
        lowest value, and for ``sub-handling`` (RFC 5025 section 3.2.1)
        that is block, numbered 0.
        """
        document = ruleset(rule(one("sip:bob@example.com")))
        outcome = evaluate(parseRuleSet([document]), ALICE, NOON)
        self.assertIs(outcome, BLOCKED)
        self.assertEqual((outcome.status, outcome.reason), (TERMINATED, "rejected"))
        self.assertTrue(outcome.documented)

    def test_emptyRuleSetBlocks(self) -> None:
        """A ruleset without rules is a document: everybody is blocked."""
        outcome = evaluate(parseRuleSet([ruleset()]), ALICE, NOON)
        self.assertIs(outcome, BLOCKED)

    def test_blockAll(self) -> None:
        """`BLOCK_ALL`, for an unreadable document, blocks everybody."""
        for watcher in (ALICE, ANONYMOUS, CAROL):
            self.assertIs(BLOCK_ALL.evaluate(watcher, NOON), BLOCKED)
        self.assertEqual(len(BLOCK_ALL), 0)

    def test_statuses(self) -> None:
        """RFC 5025 section 3.2.1: each sub-handling has its subscription state.

        block rejects the subscription (terminated); confirm places it in
        the pending state until the presentity decides; polite-block makes
        it active with a document that shows the presentity unavailable;
        allow makes it active.
        """
        cases = {
            SubHandling.BLOCK: (TERMINATED, "rejected", False),
            SubHandling.CONFIRM: (PENDING, None, False),
            SubHandling.POLITE_BLOCK: (ACTIVE, None, True),
            SubHandling.ALLOW: (ACTIVE, None, False),
        }
        for value, expected in cases.items():
            outcome = Outcome(value, NO_PERMISSIONS)
            self.assertEqual(
                (outcome.status, outcome.reason, outcome.politeBlock), expected
            )

    def test_numbers(self) -> None:
        """RFC 5025 sections 3.2.1 and 3.3.2.12 give the values their numbers."""
        self.assertEqual(
            [int(v) for v in SubHandling], [0, 10, 20, 30]
        )  # block, confirm, polite-block, allow
        self.assertEqual([int(v) for v in UserInput], [0, 10, 20, 30])

    def test_documentsParsed(self) -> None:
        """No documents at all is the caller's mistake, not an empty rule set."""
        self.assertRaises(ValueError, parseRuleSet, [])


class ParseTests(SynchronousTestCase):
    """Documents that cannot be read raise `RulesError`; the caller blocks."""

    def assertMalformed(self, document: bytes, why: str) -> None:
        """The document raises RulesError with ``why`` in its message."""
        error = self.assertRaises(RulesError, parseRuleSet, [document])
        self.assertIn(why, str(error), document)

    def test_notXML(self) -> None:
        """A body that is not well-formed XML."""
        self.assertMalformed(b"<cr:ruleset", "malformed")
        self.assertMalformed(b"", "malformed")
        self.assertMalformed(b"\xff\xfe\x00", "malformed")

    def test_dtd(self) -> None:
        """A DTD is refused, so no entity is ever expanded."""
        document = (
            b'<!DOCTYPE r [<!ENTITY e "x">]><ruleset xmlns="' + CP.encode() + b'"/>'
        )
        self.assertMalformed(document, "DTD")

    def test_tooLarge(self) -> None:
        """A document above the XML size limit is refused unread."""
        document = ruleset(rule() * 20000)
        self.assertMalformed(document, "too large")

    def test_wrongRoot(self) -> None:
        """RFC 4745 section 6: the root is common policy's ``ruleset``."""
        self.assertMalformed(b"<ruleset/>", "root")
        self.assertMalformed(f'<rule xmlns="{CP}" id="a"/>'.encode(), "root")
        self.assertMalformed(f'<ruleset xmlns="{PR}"/>'.encode(), "root")

    def test_schemaViolations(self) -> None:
        """Values whose meaning would have to be guessed make the document fail.

        A rule is conditions, actions and transformations, each at most once
        (RFC 4745 section 6); ``sub-handling`` is one of four tokens and
        ``provide-user-input`` one of four (RFC 5025 section 7); booleans
        are xs:boolean; ``one`` needs ``id``, ``sphere`` needs ``value``,
        ``validity`` holds ``from``/``until`` pairs with time zones.
        """
        cases = {
            ruleset("<cr:foo/>"): "unexpected <foo>",
            ruleset('<cr:rule id="a"><cr:bar/></cr:rule>'): "unexpected <bar>",
            ruleset(
                '<cr:rule id="a"><cr:conditions/><cr:conditions/></cr:rule>'
            ): "more than one",
            ruleset(rule(handling="maybe")): "sub-handling",
            ruleset(rule(handling="Allow")): "sub-handling",
            ruleset(
                rule(transformations="<pr:provide-mood>yes</pr:provide-mood>")
            ): "true or false",
            ruleset(
                rule(
                    transformations="<pr:provide-user-input>all</pr:provide-user-input>"
                )
            ): "provide-user-input",
            ruleset(
                rule(
                    transformations=(
                        '<pr:provide-unknown-attribute name="x">true'
                        "</pr:provide-unknown-attribute>"
                    )
                )
            ): "'ns'",
            ruleset(rule("<cr:identity><cr:one/></cr:identity>")): "'id'",
            ruleset(rule('<cr:identity><cr:one id=" "/></cr:identity>')): "'id'",
            ruleset(rule("<cr:sphere/>")): "'value'",
            ruleset(rule("<cr:validity/>")): "pairs",
            ruleset(
                rule(
                    "<cr:validity><cr:from>2024-01-01T00:00:00Z</cr:from></cr:validity>"
                )
            ): "pairs",
            ruleset(
                rule(
                    "<cr:validity><cr:until>2024-01-01T00:00:00Z</cr:until>"
                    "<cr:from>2023-01-01T00:00:00Z</cr:from></cr:validity>"
                )
            ): "pairs",
            ruleset(
                rule(
                    "<cr:validity><cr:from>2024-01-01T00:00:00</cr:from>"
                    "<cr:until>2025-01-01T00:00:00Z</cr:until></cr:validity>"
                )
            ): "time zone",
            ruleset(rule("<cr:frobnicate/>")): "unexpected <frobnicate>",
            ruleset(rule("<cr:identity><cr:all/></cr:identity>")): "unexpected <all>",
            ruleset(
                rule("<cr:identity><cr:many><cr:only/></cr:many></cr:identity>")
            ): "unexpected <only>",
            ruleset(
                rule(
                    handling=None,
                    transformations="<cr:provide-mood>true</cr:provide-mood>",
                )
            ): "unexpected <provide-mood>",
            ruleset(
                '<cr:rule id="a"><cr:actions><cr:sub-handling>allow</cr:sub-handling>'
                "</cr:actions></cr:rule>"
            ): "unexpected <sub-handling>",
            ruleset(
                rule(transformations="<pr:provide-mood><x/></pr:provide-mood>")
            ): "must hold text",
            ruleset(
                rule(
                    transformations=(
                        "<pr:provide-persons><pr:deviceID>urn:x</pr:deviceID>"
                        "</pr:provide-persons>"
                    )
                )
            ): "unexpected <deviceID>",
            ruleset(
                rule("<ocp:external-list><ocp:item/></ocp:external-list>")
            ): "unexpected <item>",
        }
        for document, why in cases.items():
            self.assertMalformed(document, why)

    def test_oneBadDocumentSpoilsAll(self) -> None:
        """One unreadable document of several makes the whole set unreadable.

        Its rules might have blocked the watcher the other documents allow,
        so the caller blocks (fail closed) instead of using the rest.
        """
        good = ruleset(rule())
        self.assertRaises(RulesError, parseRuleSet, [good, b"<oops"])

    def test_booleans(self) -> None:
        """xs:boolean: ``true``, ``false``, ``1``, ``0``, white space collapsed."""
        for value, granted in [
            ("true", True),
            ("1", True),
            (" true\n", True),
            ("false", False),
            ("0", False),
        ]:
            document = ruleset(
                rule(transformations=f"<pr:provide-mood>{value}</pr:provide-mood>")
            )
            permissions = decide(document, ALICE).permissions
            self.assertEqual("mood" in permissions.attributes, granted, value)

    def test_dateTimes(self) -> None:
        """xs:dateTime with a time zone, fractions of seconds and 24:00:00."""
        base = datetime(2024, 6, 1, 12, tzinfo=UTC).timestamp()
        self.assertEqual(parseDateTime("2024-06-01T12:00:00Z"), base)
        self.assertEqual(parseDateTime("2024-06-01T14:00:00+02:00"), base)
        self.assertEqual(parseDateTime("2024-06-01T07:00:00-05:00"), base)
        self.assertEqual(parseDateTime(" 2024-06-01T12:00:00.250Z "), base + 0.25)
        self.assertEqual(
            parseDateTime("2024-05-31T24:00:00Z"),
            datetime(2024, 6, 1, tzinfo=UTC).timestamp(),
        )
        for bad in [
            "2024-06-01T12:00:00",
            "2024-06-01",
            "2024-13-01T12:00:00Z",
            "2024-02-30T12:00:00Z",
            "2024-06-01T24:00:01Z",
            "2024-06-01T12:00:00+15:00",
            "2024-06-01T12:60:00Z",
            "20240601T120000Z",
            "9999-12-31T24:00:00Z",
            "0000-01-01T00:00:00Z",
        ]:
            self.assertRaises(RulesError, parseDateTime, bad)

    def test_anyRuleOrder(self) -> None:
        """Conditions, actions and transformations may come in any order."""
        document = ruleset(
            '<cr:rule id="a"><cr:transformations><pr:provide-mood>true'
            "</pr:provide-mood></cr:transformations>"
            "<cr:actions><pr:sub-handling>allow</pr:sub-handling></cr:actions>"
            f"<cr:conditions>{one('sip:alice@example.com')}</cr:conditions>"
            "</cr:rule>"
        )
        outcome = decide(document, ALICE)
        self.assertEqual(outcome.subHandling, SubHandling.ALLOW)
        self.assertEqual(outcome.permissions.attributes, {"mood"})


class InvarianceTests(SynchronousTestCase):
    """Comments, white space and namespace prefixes change nothing."""

    PLAIN = ruleset(
        rule(
            one("sip:alice@example.com"),
            "allow",
            "<pr:provide-services><pr:service-uri-scheme>sip</pr:service-uri-scheme>"
            "<pr:class>business</pr:class></pr:provide-services>"
            "<pr:provide-persons><pr:all-persons/></pr:provide-persons>"
            "<pr:provide-activities>true</pr:provide-activities>"
            "<pr:provide-user-input>thresholds</pr:provide-user-input>",
            "a",
        ),
        rule(
            '<cr:identity><cr:many domain="example.com">'
            '<cr:except id="sip:bob@example.com"/>'
            "</cr:many></cr:identity>"
            '<cr:sphere value="work"/>'
            "<cr:validity><cr:from>2024-01-01T00:00:00Z</cr:from>"
            "<cr:until>2025-01-01T00:00:00Z</cr:until></cr:validity>",
            "confirm",
            ident="b",
        ),
        rule("<ocp:other-identity/>", "polite-block", ident="c"),
    )

    VARIANTS: ClassVar[list[str]] = [
        # Other prefixes, and the pres-rules namespace as the default.
        f"""<?xml version="1.0"?>
<policy:ruleset xmlns:policy="{CP}" xmlns="{PR}" xmlns:oma="{OCP}">
  <policy:rule id="a">
    <policy:conditions>
      <policy:identity>
        <policy:one id="sip:alice@example.com"/>
      </policy:identity>
    </policy:conditions>
    <policy:actions>
      <sub-handling>allow</sub-handling>
    </policy:actions>
    <policy:transformations>
      <provide-services>
        <service-uri-scheme>sip</service-uri-scheme>
        <class>business</class>
      </provide-services>
      <provide-persons>
        <all-persons/>
      </provide-persons>
      <provide-activities>true</provide-activities>
      <provide-user-input>thresholds</provide-user-input>
    </policy:transformations>
  </policy:rule>
  <policy:rule id="b">
    <policy:conditions>
      <policy:identity>
        <policy:many domain="example.com">
          <policy:except id="sip:bob@example.com"/>
        </policy:many>
      </policy:identity>
      <policy:sphere value="work"/>
      <policy:validity>
        <policy:from>2024-01-01T00:00:00Z</policy:from>
        <policy:until>2025-01-01T00:00:00Z</policy:until>
      </policy:validity>
    </policy:conditions>
    <policy:actions><sub-handling>confirm</sub-handling></policy:actions>
  </policy:rule>
  <policy:rule id="c">
    <policy:conditions><oma:other-identity/></policy:conditions>
    <policy:actions><sub-handling>polite-block</sub-handling></policy:actions>
  </policy:rule>
</policy:ruleset>
""",
        # Common policy as the default namespace, comments everywhere, even
        # inside values, and a processing instruction.
        f"""<!-- the rules --><ruleset xmlns="{CP}"><!-- one -->
<?editor keep?>
<rule id="a"><conditions><identity><!-- alice --><one id="sip:alice@example.com"/>
</identity></conditions>
<actions><sub-handling xmlns="{PR}">al<!-- split -->low</sub-handling></actions>
<transformations>
<p:provide-services xmlns:p="{PR}"><!-- which -->
<p:service-uri-scheme> sip </p:service-uri-scheme><p:class>business</p:class>
</p:provide-services>
<p:provide-persons xmlns:p="{PR}"><p:all-persons/></p:provide-persons>
<q:provide-activities xmlns:q="{PR}">
  true
</q:provide-activities>
<q:provide-user-input xmlns:q="{PR}">thresh<!-- x -->olds</q:provide-user-input>
</transformations></rule>
<rule id="b"><conditions>
<identity><many domain="EXAMPLE.COM"><except id="sip:bob@EXAMPLE.com"/></many>
</identity>
<sphere value="Work"/>
<validity><from>2024-01-01T01:00:00+01:00</from><until>2024-12-31T19:00:00-05:00</until>
</validity>
</conditions><actions><sub-handling xmlns="{PR}">confirm</sub-handling></actions></rule>
<rule id="c"><conditions><other-identity xmlns="{OCP}"/></conditions>
<actions><x:sub-handling xmlns:x="{PR}">polite-block</x:sub-handling></actions></rule>
</ruleset>
""",
        # CDATA for values.
        f"""<cr:ruleset xmlns:cr="{CP}" xmlns:pr="{PR}" xmlns:ocp="{OCP}">
<cr:rule id="a"><cr:conditions><cr:identity><cr:one id="sip:alice@example.com"/>
</cr:identity></cr:conditions><cr:actions>
<pr:sub-handling><![CDATA[allow]]></pr:sub-handling></cr:actions>
<cr:transformations><pr:provide-services>
<pr:service-uri-scheme><![CDATA[sip]]></pr:service-uri-scheme>
<pr:class>business</pr:class></pr:provide-services>
<pr:provide-persons><pr:all-persons/></pr:provide-persons>
<pr:provide-activities><![CDATA[true]]></pr:provide-activities>
<pr:provide-user-input>thresholds</pr:provide-user-input>
</cr:transformations></cr:rule>
<cr:rule id="b"><cr:conditions><cr:identity><cr:many domain="example.com">
<cr:except id="sip:bob@example.com"/></cr:many></cr:identity>
<cr:sphere value="work"/><cr:validity><cr:from>2024-01-01T00:00:00Z</cr:from>
<cr:until>2025-01-01T00:00:00Z</cr:until></cr:validity></cr:conditions>
<cr:actions><pr:sub-handling>confirm</pr:sub-handling></cr:actions></cr:rule>
<cr:rule id="c"><cr:conditions><ocp:other-identity/></cr:conditions>
<cr:actions><pr:sub-handling>polite-block</pr:sub-handling></cr:actions></cr:rule>
</cr:ruleset>""",
    ]

    def outcomes(self, document: bytes) -> list[Outcome]:
        """The outcomes for a panel of watchers, times and spheres."""
        rules = parseRuleSet([document])
        out = []
        for watcher in (ALICE, BOB, CAROL, DAVE, ERIN, ANONYMOUS):
            for sphere in (None, "work", "home"):
                for now in (NOON, NOON + 365 * 86400):
                    out.append(rules.evaluate(watcher, now, sphere))
        return out

    def test_sameOutcomes(self) -> None:
        """Every variant decides as the plain document does, for everybody.

        XML namespaces (the document's meaning is in namespace and local
        name, never in the prefix), comments and white space between
        elements carry no meaning in a pres-rules document.
        """
        expected = self.outcomes(self.PLAIN)
        self.assertEqual(
            {o.subHandling for o in expected},
            set(SubHandling),
        )
        for variant in self.VARIANTS:
            self.assertEqual(self.outcomes(variant.encode()), expected, variant)


class IdentityTests(SynchronousTestCase):
    """RFC 4745 section 7.1: ``identity`` with ``one`` and ``many``."""

    def test_one(self) -> None:
        """RFC 4745 section 7.1.1: ``one`` matches exactly one identity."""
        document = ruleset(rule(one("sip:alice@example.com", "tel:+15551234")))
        self.assertEqual(handling(document, ALICE), SubHandling.ALLOW)
        self.assertEqual(
            handling(document, Watcher.fromURI("tel:+15551234")), SubHandling.ALLOW
        )
        self.assertEqual(handling(document, BOB), SubHandling.BLOCK)
        self.assertEqual(
            handling(document, Watcher.fromURI("sip:alice@example.org")),
            SubHandling.BLOCK,
        )

    def test_oneComparedAsURIs(self) -> None:
        """SIP URIs compare as RFC 3261 section 19.1.4 says.

        The host is case-insensitive and escapes equal the characters they
        stand for; the user part is case-sensitive. Parameters and ports are
        not part of an identity (RFC 5025 section 3.1.1.2).
        """
        document = ruleset(rule(one("sip:alice@EXAMPLE.com")))
        for uri in [
            "sip:alice@example.com",
            "sip:%61lice@Example.COM",
            "sip:alice@example.com;transport=tcp",
        ]:
            self.assertEqual(
                handling(document, Watcher.fromURI(uri)), SubHandling.ALLOW, uri
            )
        self.assertEqual(
            handling(document, Watcher.fromURI("sip:Alice@example.com")),
            SubHandling.BLOCK,
        )
        self.assertEqual(
            handling(document, Watcher.fromURI("sips:alice@example.com")),
            SubHandling.BLOCK,
        )

    def test_fromParts(self) -> None:
        """The watchers table's user and domain make the same watcher."""
        self.assertEqual(Watcher.fromParts("alice", "Example.com"), ALICE)
        self.assertEqual(ALICE.domain, "example.com")
        self.assertIsNone(Watcher.fromURI("tel:+15551234").domain)

    def test_manyDomain(self) -> None:
        """RFC 4745 section 7.1.2: ``many`` with a domain matches its users.

        Domains compare case-insensitively; a subdomain is another domain.
        """
        document = ruleset(
            rule('<cr:identity><cr:many domain="Example.COM"/></cr:identity>')
        )
        self.assertEqual(handling(document, ALICE), SubHandling.ALLOW)
        self.assertEqual(handling(document, BOB), SubHandling.ALLOW)
        self.assertEqual(handling(document, CAROL), SubHandling.BLOCK)
        self.assertEqual(handling(document, DAVE), SubHandling.BLOCK)
        self.assertEqual(
            handling(document, Watcher.fromURI("tel:+15551234")), SubHandling.BLOCK
        )

    def test_manyExcept(self) -> None:
        """RFC 4745 section 7.1.2: ``except`` takes users or domains out again."""
        document = ruleset(
            rule(
                '<cr:identity><cr:many domain="example.com">'
                '<cr:except id="sip:bob@example.com"/></cr:many></cr:identity>'
            )
        )
        self.assertEqual(handling(document, ALICE), SubHandling.ALLOW)
        self.assertEqual(handling(document, BOB), SubHandling.BLOCK)
        document = ruleset(
            rule(
                "<cr:identity><cr:many>"
                '<cr:except domain="Example.org"/>'
                '<cr:except id="sip:dave@sales.example.com"/>'
                "</cr:many></cr:identity>"
            )
        )
        self.assertEqual(handling(document, ALICE), SubHandling.ALLOW)
        self.assertEqual(handling(document, CAROL), SubHandling.BLOCK)
        self.assertEqual(handling(document, DAVE), SubHandling.BLOCK)

    def test_manyWithoutDomain(self) -> None:
        """RFC 4745 section 7.1.2: ``many`` alone is any authenticated identity.

        So never an anonymous one.
        """
        document = ruleset(rule("<cr:identity><cr:many/></cr:identity>"))
        for watcher in (ALICE, CAROL, Watcher.fromURI("tel:+15551234")):
            self.assertEqual(handling(document, watcher), SubHandling.ALLOW)
        self.assertEqual(handling(document, ANONYMOUS), SubHandling.BLOCK)
        self.assertEqual(
            handling(document, Watcher.fromURI("sip:x@example.com", anonymous=True)),
            SubHandling.BLOCK,
        )

    def test_anyChildMatches(self) -> None:
        """The children of one ``identity`` are alternatives."""
        document = ruleset(
            rule(
                '<cr:identity><cr:one id="sip:carol@example.org"/>'
                '<cr:many domain="example.com"/></cr:identity>'
            )
        )
        for watcher in (ALICE, CAROL):
            self.assertEqual(handling(document, watcher), SubHandling.ALLOW)
        self.assertEqual(handling(document, DAVE), SubHandling.BLOCK)

    def test_exceptOnlyInItsMany(self) -> None:
        """An ``except`` of one ``many`` leaves another ``many`` alone."""
        document = ruleset(
            rule(
                '<cr:identity><cr:many domain="example.com">'
                '<cr:except id="sip:bob@example.com"/></cr:many>'
                "<cr:many/></cr:identity>"
            )
        )
        self.assertEqual(handling(document, BOB), SubHandling.ALLOW)

    def test_anonymousMatchesNoIdentity(self) -> None:
        """RFC 5025 section 3.1.1.1: anonymous is not an authenticated identity.

        Not even when the rule names the anonymous URI.
        """
        document = ruleset(rule(one("sip:anonymous@anonymous.invalid")))
        self.assertEqual(handling(document, ANONYMOUS), SubHandling.BLOCK)
        self.assertTrue(Watcher.fromURI("sip:anonymous@ANONYMOUS.invalid").anonymous)

    def test_identityForm(self) -> None:
        """An identity form of another namespace is not understood: nobody."""
        document = ruleset(
            rule('<cr:identity><x:any xmlns:x="urn:example:x"/></cr:identity>')
        )
        self.assertEqual(handling(document, ALICE), SubHandling.BLOCK)

    def test_identityKey(self) -> None:
        """The compared form of identities."""
        self.assertEqual(
            identityKey(" sip:%41b@Example.COM:5060;user=ip "), "sip:Ab@example.com"
        )
        self.assertEqual(identityKey("SIPS:a@B"), "sips:a@b")
        self.assertEqual(
            identityKey("Mailto:Ann@Example.com"), "mailto:Ann@example.com"
        )
        self.assertEqual(identityKey("tel:+1-555"), "tel:+1-555")
        self.assertEqual(identityKey("not a uri"), "not a uri")


class SphereTests(SynchronousTestCase):
    """RFC 4745 section 7.2: ``sphere`` against the presentity's sphere."""

    DOCUMENT = ruleset(rule('<cr:sphere value="work"/>'))

    def test_matches(self) -> None:
        """The condition holds when the current sphere is the value."""
        self.assertEqual(
            handling(self.DOCUMENT, ALICE, sphere="work"), SubHandling.ALLOW
        )
        self.assertEqual(
            handling(self.DOCUMENT, ALICE, sphere="home"), SubHandling.BLOCK
        )

    def test_caseInsensitive(self) -> None:
        """Sphere values compare case-insensitively (RFC 4745 section 7.2)."""
        self.assertEqual(
            handling(self.DOCUMENT, ALICE, sphere=" WORK"), SubHandling.ALLOW
        )

    def test_unknownSphere(self) -> None:
        """Without a known current sphere no sphere condition holds."""
        self.assertEqual(handling(self.DOCUMENT, ALICE, sphere=None), SubHandling.BLOCK)

    def test_severalValues(self) -> None:
        """``value`` may hold several spheres, space-separated: any will do."""
        document = ruleset(rule('<cr:sphere value="work  home"/>'))
        for sphere in ("work", "home"):
            self.assertEqual(
                handling(document, ALICE, sphere=sphere), SubHandling.ALLOW
            )
        self.assertEqual(handling(document, ALICE, sphere="gym"), SubHandling.BLOCK)

    def test_withIdentity(self) -> None:
        """All of a rule's conditions must hold (RFC 4745 section 7)."""
        document = ruleset(
            rule(one("sip:alice@example.com") + '<cr:sphere value="work"/>')
        )
        self.assertEqual(handling(document, ALICE, sphere="work"), SubHandling.ALLOW)
        self.assertEqual(handling(document, ALICE, sphere="home"), SubHandling.BLOCK)
        self.assertEqual(handling(document, BOB, sphere="work"), SubHandling.BLOCK)


class ValidityTests(SynchronousTestCase):
    """RFC 4745 section 7.3: ``validity`` intervals against ``now``."""

    DOCUMENT = ruleset(
        rule(
            "<cr:validity>"
            "<cr:from>2024-06-01T10:00:00+02:00</cr:from>"
            "<cr:until>2024-06-01T13:00:00Z</cr:until>"
            "<cr:from>2024-07-01T00:00:00Z</cr:from>"
            "<cr:until>2024-07-02T00:00:00Z</cr:until>"
            "</cr:validity>"
        )
    )

    def at(self, when: str) -> SubHandling:
        """The sub-handling at a time."""
        return handling(self.DOCUMENT, ALICE, now=parseDateTime(when))

    def test_interval(self) -> None:
        """The condition holds from ``from`` (included) to ``until`` (excluded)."""
        self.assertEqual(self.at("2024-06-01T07:59:59Z"), SubHandling.BLOCK)
        self.assertEqual(self.at("2024-06-01T08:00:00Z"), SubHandling.ALLOW)
        self.assertEqual(self.at("2024-06-01T12:59:59.5Z"), SubHandling.ALLOW)
        self.assertEqual(self.at("2024-06-01T13:00:00Z"), SubHandling.BLOCK)

    def test_anyInterval(self) -> None:
        """Several intervals: any of them will do."""
        self.assertEqual(self.at("2024-07-01T12:00:00+05:00"), SubHandling.ALLOW)
        self.assertEqual(self.at("2024-06-15T12:00:00Z"), SubHandling.BLOCK)

    def test_noClock(self) -> None:
        """Only the ``now`` given counts: the same rules decide by it alone."""
        rules = parseRuleSet([self.DOCUMENT])
        late = parseDateTime("2030-01-01T00:00:00Z")
        self.assertEqual(rules.evaluate(ALICE, NOON).subHandling, SubHandling.ALLOW)
        self.assertEqual(rules.evaluate(ALICE, late).subHandling, SubHandling.BLOCK)
        self.assertEqual(rules.evaluate(ALICE, NOON).subHandling, SubHandling.ALLOW)


class ExternalListTests(SynchronousTestCase):
    """OMA ``external-list``: the watcher is in one of the user's lists."""

    ANCHOR = (
        "http://xcap.example.com/resource-lists/users/sip:bob@example.com/index"
        "/~~/resource-lists/list%5b@name=%22friends%22%5d"
    )

    def document(self, *anchors: str) -> bytes:
        """Allow the members of these lists."""
        entries = "".join(f'<ocp:entry anc="{a}"/>' for a in anchors)
        return ruleset(rule(f"<ocp:external-list>{entries}</ocp:external-list>"))

    def test_member(self) -> None:
        """The condition holds for a member of any list named."""
        lists = {
            "friends": frozenset({ALICE.key}),
            "family": frozenset({CAROL.key}),
        }
        document = self.document(self.ANCHOR, "family")
        self.assertEqual(handling(document, ALICE, lists=lists), SubHandling.ALLOW)
        self.assertEqual(handling(document, CAROL, lists=lists), SubHandling.ALLOW)
        self.assertEqual(handling(document, BOB, lists=lists), SubHandling.BLOCK)

    def test_unknownList(self) -> None:
        """A list the resolver does not know has no members."""
        document = self.document(self.ANCHOR)
        self.assertEqual(handling(document, ALICE, lists={}), SubHandling.BLOCK)

    def test_callable(self) -> None:
        """The resolver may be a callable; KeyError means no such list."""
        asked = []

        def resolve(path: str) -> frozenset[str]:
            asked.append(path)
            if path == "friends":
                return frozenset({ALICE.key})
            raise KeyError(path)

        rules = parseRuleSet([self.document("nobody", self.ANCHOR)])
        self.assertEqual(
            rules.evaluate(ALICE, NOON, lists=resolve).subHandling, SubHandling.ALLOW
        )
        self.assertEqual(
            rules.evaluate(BOB, NOON, lists=resolve).subHandling, SubHandling.BLOCK
        )
        self.assertEqual(asked, ["nobody", "friends", "nobody", "friends"])

    def test_anonymous(self) -> None:
        """An anonymous watcher is nobody's list member."""
        lists = {"friends": frozenset({ANONYMOUS.key})}
        document = self.document("friends")
        self.assertEqual(handling(document, ANONYMOUS, lists=lists), SubHandling.BLOCK)

    def test_listPath(self) -> None:
        """Anchors are XCAP URIs to a list (RFC 4825 section 6), or names."""
        cases = {
            self.ANCHOR: "friends",
            "friends": "friends",
            "http://x/resource-lists/users/sip:b@x/index/~~/resource-lists/"
            "list[@name='a b']/list[@name=\"c\"]": "a b/c",
            "http://x/resource-lists/users/sip:b@x/index/~~/rl:resource-lists/"
            "rl:list%5B@name=%22q%22%5D": "q",
            "http://x/resource-lists/users/sip:b@x/index/~~/resource-lists/"
            "list[@name=%22a%22]/entry[@uri=%22sip:x@y%22]": None,
            "http://x/resource-lists/users/sip:b@x/index/~~/resource-lists": None,
            "http://x/resource-lists/users/sip:b@x/index/~~/other/"
            "list[@name=%22a%22]": None,
            "http://x/resource-lists/users/sip:b@x/index": None,
            "": None,
        }
        for anchor, path in cases.items():
            self.assertEqual(listPath(anchor), path, anchor)

    def test_resourceLists(self) -> None:
        """RFC 4826: a list's members are its entries and its lists' entries."""
        document = f"""<?xml version="1.0"?>
<resource-lists xmlns="{RL}">
  <list name="friends">
    <entry uri="sip:alice@EXAMPLE.com"><display-name>Alice</display-name></entry>
    <!-- close friends -->
    <list name="close"><entry uri="sip:carol@example.org"/></list>
    <list><entry uri="sip:dave@sales.example.com"/>
      <list name="hidden"><entry uri="sip:eve@example.com"/></list></list>
    <entry-ref ref="resource-lists/users/sip:bob@example.com/index/~~/x"/>
    <external anchor="http://xcap.example.com/resource-lists/users/y/index"/>
  </list>
  <list name="work"><entry uri="sip:bob@example.com"/></list>
</resource-lists>""".encode()
        lists = resourceLists(document)
        self.assertEqual(
            lists,
            {
                "friends": {
                    "sip:alice@example.com",
                    "sip:carol@example.org",
                    "sip:dave@sales.example.com",
                    "sip:eve@example.com",
                },
                "friends/close": {"sip:carol@example.org"},
                "work": {"sip:bob@example.com"},
            },
        )
        anchor = self.ANCHOR.replace("friends", "friends%22%5d/list%5b@name=%22close")
        self.assertEqual(listPath(anchor), "friends/close")
        rules = parseRuleSet([self.document(anchor)])
        self.assertEqual(
            rules.evaluate(CAROL, NOON, lists=lists).subHandling, SubHandling.ALLOW
        )
        self.assertEqual(
            rules.evaluate(ALICE, NOON, lists=lists).subHandling, SubHandling.BLOCK
        )

    def test_resourceListsMalformed(self) -> None:
        """An unreadable resource-lists document raises RulesError."""
        for document in [
            b"<resource-lists",
            b"<resource-lists/>",
            f'<list xmlns="{RL}"/>'.encode(),
        ]:
            self.assertRaises(RulesError, resourceLists, document)


class AnonymousRequestTests(SynchronousTestCase):
    """OMA ``anonymous-request``: the watcher is anonymous."""

    DOCUMENT = ruleset(rule("<ocp:anonymous-request/>", "polite-block"))

    def test_anonymous(self) -> None:
        """The anonymous URI, or the caller's flag, make a watcher anonymous."""
        self.assertEqual(handling(self.DOCUMENT, ANONYMOUS), SubHandling.POLITE_BLOCK)
        flagged = Watcher.fromURI("sip:alice@example.com", anonymous=True)
        self.assertEqual(handling(self.DOCUMENT, flagged), SubHandling.POLITE_BLOCK)

    def test_identified(self) -> None:
        """An authenticated watcher is not anonymous."""
        self.assertEqual(handling(self.DOCUMENT, ALICE), SubHandling.BLOCK)


class OtherIdentityTests(SynchronousTestCase):
    """OMA ``other-identity``: nobody the other rules name."""

    DOCUMENT = ruleset(
        rule(one("sip:alice@example.com"), "allow", ident="friends"),
        rule(
            one("sip:bob@example.com") + '<cr:sphere value="work"/>',
            "allow",
            ident="work",
        ),
        rule("<ocp:anonymous-request/>", "block", ident="anonymous"),
        rule(
            "<ocp:external-list><ocp:entry anc='blocked'/></ocp:external-list>",
            "block",
            ident="blocked",
        ),
        rule("<ocp:other-identity/>", "confirm", ident="others"),
    )
    LISTS: ClassVar[dict[str, frozenset[str]]] = {"blocked": frozenset({CAROL.key})}

    def at(self, watcher: Watcher, sphere: str | None = None) -> SubHandling:
        """The sub-handling for a watcher."""
        return handling(self.DOCUMENT, watcher, sphere=sphere, lists=self.LISTS)

    def test_unnamed(self) -> None:
        """A watcher no other rule's identity condition names matches."""
        self.assertEqual(self.at(DAVE), SubHandling.CONFIRM)

    def test_named(self) -> None:
        """A watcher another rule names does not match.

        Named by ``identity``, ``external-list`` or ``anonymous-request``.
        """
        self.assertEqual(self.at(ALICE), SubHandling.ALLOW)
        self.assertEqual(self.at(CAROL), SubHandling.BLOCK)
        self.assertEqual(self.at(ANONYMOUS), SubHandling.BLOCK)

    def test_namedButOtherwiseUnmatched(self) -> None:
        """Bob is named, even where the rule naming him fails on its sphere.

        He is not an "other" identity, so he gets neither that rule's allow
        nor the confirm for strangers: a user who allows a colleague at work
        does not mean to ask about him again at home.
        """
        self.assertEqual(self.at(BOB, sphere="work"), SubHandling.ALLOW)
        self.assertEqual(self.at(BOB, sphere="home"), SubHandling.BLOCK)

    def test_alone(self) -> None:
        """With no other rule, everybody is an other identity."""
        document = ruleset(rule("<ocp:other-identity/>", "confirm"))
        for watcher in (ALICE, ANONYMOUS):
            self.assertEqual(handling(document, watcher), SubHandling.CONFIRM)

    def test_withOwnIdentity(self) -> None:
        """A rule's own identity condition is not another rule's: both hold."""
        document = ruleset(
            rule(
                '<cr:identity><cr:many domain="example.com"/></cr:identity>'
                "<ocp:other-identity/>",
                "allow",
                ident="a",
            ),
            rule(one("sip:bob@example.com"), "polite-block", ident="b"),
        )
        self.assertEqual(handling(document, ALICE), SubHandling.ALLOW)
        self.assertEqual(handling(document, BOB), SubHandling.POLITE_BLOCK)
        self.assertEqual(handling(document, CAROL), SubHandling.BLOCK)


class ConditionsTests(SynchronousTestCase):
    """Rules without conditions, and conditions not understood."""

    def test_noConditions(self) -> None:
        """RFC 4745 section 7: a rule without conditions matches everybody.

        With an empty ``conditions`` element or without one.
        """
        for document in (ruleset(rule("")), ruleset(rule(None))):
            for watcher in (ALICE, CAROL, ANONYMOUS):
                self.assertEqual(handling(document, watcher), SubHandling.ALLOW)

    def test_unknownCondition(self) -> None:
        """RFC 4745 section 7: a condition not understood is false.

        So the rule never applies.
        """
        document = ruleset(
            rule(one("sip:alice@example.com") + '<x:moon xmlns:x="urn:example:x"/>'),
        )
        self.assertIs(decide(document, ALICE), BLOCKED)
        # A pres-rules element is not a condition either.
        document = ruleset(rule("<pr:sub-handling>allow</pr:sub-handling>"))
        self.assertIs(decide(document, ALICE), BLOCKED)

    def test_unknownConditionStillNames(self) -> None:
        """A rule that never applies still names watchers for ``other-identity``."""
        document = ruleset(
            rule(one("sip:alice@example.com") + '<x:moon xmlns:x="urn:example:x"/>'),
            rule("<ocp:other-identity/>", "confirm", ident="b"),
        )
        self.assertEqual(handling(document, ALICE), SubHandling.BLOCK)
        self.assertEqual(handling(document, BOB), SubHandling.CONFIRM)

    def test_unknownActionsAndTransformations(self) -> None:
        """Actions and transformations not understood grant nothing."""
        document = ruleset(
            rule(
                handling=None,
                transformations=(
                    '<x:provide-everything xmlns:x="urn:example:x">true'
                    "</x:provide-everything>"
                    "<pr:provide-geopriv>full</pr:provide-geopriv>"
                    "<pr:provide-services><x:by-moon xmlns:x='urn:example:x'/>"
                    "</pr:provide-services>"
                ),
            ).replace(
                "</cr:rule>",
                '<cr:actions><x:forward xmlns:x="urn:example:x"/></cr:actions>'
                "</cr:rule>",
            )
        )
        self.assertIs(decide(document, ALICE), BLOCKED)


class CombinationTests(SynchronousTestCase):
    """RFC 4745 section 10: every matching rule counts."""

    def test_subHandlingMaximum(self) -> None:
        """RFC 4745 section 10.2: the largest sub-handling wins.

        RFC 5025 section 3.2.1 numbers them (block 0 < confirm 10 <
        polite-block 20 < allow 30).
        """
        values = ["block", "confirm", "polite-block", "allow"]
        for i, low in enumerate(values):
            for high in values[i:]:
                for order in ((low, high), (high, low)):
                    document = ruleset(
                        rule(handling=order[0], ident="a"),
                        rule(handling=order[1], ident="b"),
                    )
                    self.assertEqual(
                        handling(document, ALICE).name.lower().replace("_", "-"),
                        high,
                        order,
                    )

    def test_onlyMatchingRules(self) -> None:
        """A rule that does not match adds nothing."""
        document = ruleset(
            rule(one("sip:bob@example.com"), "allow", ident="a"),
            rule("", "confirm", ident="b"),
        )
        self.assertEqual(handling(document, ALICE), SubHandling.CONFIRM)
        self.assertEqual(handling(document, BOB), SubHandling.ALLOW)

    def test_withoutSubHandling(self) -> None:
        """A matching rule without sub-handling leaves it at block.

        Block is the lowest value, unless another rule gives one; the
        rule's transformations still count.
        """
        document = ruleset(
            rule("", None, "<pr:provide-mood>true</pr:provide-mood>", ident="a")
        )
        outcome = decide(document, ALICE)
        self.assertEqual(outcome.subHandling, SubHandling.BLOCK)
        self.assertEqual(outcome.permissions.attributes, {"mood"})
        document = ruleset(
            rule("", None, "<pr:provide-mood>true</pr:provide-mood>", ident="a"),
            rule(one("sip:alice@example.com"), "confirm", ident="b"),
        )
        self.assertEqual(handling(document, ALICE), SubHandling.CONFIRM)

    def test_booleansOr(self) -> None:
        """RFC 4745 section 10.2: boolean permissions are ORed.

        A false in one rule does not take back a true in another.
        """
        document = ruleset(
            rule(
                "",
                "allow",
                "<pr:provide-mood>true</pr:provide-mood>"
                "<pr:provide-note>false</pr:provide-note>",
                ident="a",
            ),
            rule(
                one("sip:alice@example.com"),
                "allow",
                "<pr:provide-mood>false</pr:provide-mood>"
                "<pr:provide-note>true</pr:provide-note>"
                "<pr:provide-all-attributes/>",
                ident="b",
            ),
        )
        self.assertEqual(
            decide(document, ALICE).permissions.attributes, {"mood", "note"}
        )
        self.assertTrue(decide(document, ALICE).permissions.allAttributes)
        self.assertEqual(decide(document, BOB).permissions.attributes, {"mood"})
        self.assertFalse(decide(document, BOB).permissions.allAttributes)

    def test_setsUnion(self) -> None:
        """RFC 4745 section 10.2: set-valued permissions are united."""
        document = ruleset(
            rule(
                "",
                "allow",
                "<pr:provide-services><pr:service-uri-scheme>SIP</pr:service-uri-scheme>"
                "<pr:occurrence-id>t1</pr:occurrence-id></pr:provide-services>"
                "<pr:provide-devices><pr:deviceID>urn:x:1</pr:deviceID></pr:provide-devices>"
                '<pr:provide-unknown-attribute ns="urn:a" name="x">true'
                "</pr:provide-unknown-attribute>",
                ident="a",
            ),
            rule(
                "",
                "allow",
                "<pr:provide-services><pr:service-uri>sip:Alice@Example.com</pr:service-uri>"
                "<pr:class>home</pr:class></pr:provide-services>"
                "<pr:provide-devices><pr:class>mobile</pr:class></pr:provide-devices>"
                "<pr:provide-persons><pr:occurrence-id>p1</pr:occurrence-id></pr:provide-persons>"
                '<pr:provide-unknown-attribute ns="urn:b" name="y">true'
                "</pr:provide-unknown-attribute>"
                '<pr:provide-unknown-attribute ns="urn:c" name="z">false'
                "</pr:provide-unknown-attribute>",
                ident="b",
            ),
        )
        permissions = decide(document, ALICE).permissions
        self.assertEqual(
            permissions.services,
            Selection(
                uris=frozenset({"sip:Alice@example.com"}),
                schemes=frozenset({"sip"}),
                occurrenceIds=frozenset({"t1"}),
                classes=frozenset({"home"}),
            ),
        )
        self.assertEqual(
            permissions.devices,
            Selection(deviceIDs=frozenset({"urn:x:1"}), classes=frozenset({"mobile"})),
        )
        self.assertEqual(
            permissions.persons, Selection(occurrenceIds=frozenset({"p1"}))
        )
        self.assertEqual(
            permissions.unknownAttributes, {("urn:a", "x"), ("urn:b", "y")}
        )

    def test_allAbsorbs(self) -> None:
        """``all-services`` in one rule and criteria in another: all services."""
        document = ruleset(
            rule(
                "",
                "allow",
                "<pr:provide-services><pr:all-services/></pr:provide-services>",
                ident="a",
            ),
            rule(
                "",
                "allow",
                "<pr:provide-services><pr:class>x</pr:class></pr:provide-services>"
                "<pr:provide-persons/>",
                ident="b",
            ),
        )
        permissions = decide(document, ALICE).permissions
        self.assertIs(permissions.services, EVERYTHING)
        self.assertEqual(permissions.persons, NOTHING)

    def test_userInputMaximum(self) -> None:
        """``provide-user-input`` is an integer permission: the maximum."""
        document = ruleset(
            rule(
                "",
                "allow",
                "<pr:provide-user-input>thresholds</pr:provide-user-input>",
                ident="a",
            ),
            rule(
                "",
                "allow",
                "<pr:provide-user-input>bare</pr:provide-user-input>",
                ident="b",
            ),
            rule(
                one("sip:alice@example.com"),
                "allow",
                "<pr:provide-user-input>full</pr:provide-user-input>",
                ident="c",
            ),
            rule(
                one("sip:bob@example.com"),
                "allow",
                "<pr:provide-user-input>false</pr:provide-user-input>",
                ident="d",
            ),
        )
        self.assertEqual(decide(document, ALICE).permissions.userInput, UserInput.FULL)
        self.assertEqual(
            decide(document, BOB).permissions.userInput, UserInput.THRESHOLDS
        )

    def test_withinOneRule(self) -> None:
        """A permission given twice in one rule combines the same way."""
        document = ruleset(
            rule(
                "",
                "allow",
                "<pr:provide-services><pr:class>a</pr:class></pr:provide-services>"
                "<pr:provide-services><pr:class>b</pr:class></pr:provide-services>"
                "<pr:provide-mood>true</pr:provide-mood><pr:provide-mood>false</pr:provide-mood>"
                "<pr:provide-user-input>full</pr:provide-user-input>"
                "<pr:provide-user-input>bare</pr:provide-user-input>",
            )
        )
        permissions = decide(document, ALICE).permissions
        self.assertEqual(permissions.services.classes, {"a", "b"})
        self.assertEqual(permissions.attributes, {"mood"})
        self.assertEqual(permissions.userInput, UserInput.FULL)

    def test_severalDocuments(self) -> None:
        """RFC 5025 section 9.7: every document of the user counts.

        The server uses "all documents found beneath" the user's directory;
        their rules combine as one rule set.
        """
        first = ruleset(
            rule(
                one("sip:alice@example.com"),
                "confirm",
                "<pr:provide-mood>true</pr:provide-mood>",
                ident="a",
            )
        )
        second = ruleset(
            rule(
                one("sip:alice@example.com"),
                "allow",
                "<pr:provide-note>true</pr:provide-note>",
                ident="a",
            ),
            rule(one("sip:bob@example.com"), "polite-block", ident="b"),
        )
        rules = parseRuleSet([first, second])
        self.assertEqual(len(rules), 3)
        outcome = rules.evaluate(ALICE, NOON)
        self.assertEqual(outcome.subHandling, SubHandling.ALLOW)
        self.assertEqual(outcome.permissions.attributes, {"mood", "note"})
        self.assertEqual(
            rules.evaluate(BOB, NOON).subHandling, SubHandling.POLITE_BLOCK
        )
        self.assertIs(rules.evaluate(CAROL, NOON), BLOCKED)
        self.assertEqual(parseRuleSet([second, first]).evaluate(ALICE, NOON), outcome)

    def test_sameOutcomeObject(self) -> None:
        """Watchers matching the same rules share one outcome.

        So a body cache keyed by permissions is hit by identity first.
        """
        document = ruleset(
            rule(
                '<cr:identity><cr:many domain="example.com"/></cr:identity>',
                "allow",
                "<pr:provide-services><pr:all-services/></pr:provide-services>",
            )
        )
        rules = parseRuleSet([document])
        first = rules.evaluate(ALICE, NOON)
        self.assertIs(rules.evaluate(BOB, NOON), first)
        self.assertEqual(
            hash(first.permissions), hash(Permissions(services=EVERYTHING))
        )
        self.assertEqual(first.permissions, Permissions(services=EVERYTHING))

    def test_memoBounded(self) -> None:
        """The memo of combinations starts again when full."""
        document = ruleset(
            rule(one("sip:alice@example.com"), "allow", ident="a"),
            rule(one("sip:bob@example.com"), "confirm", ident="b"),
        )
        rules = RuleSet(parseRuleSet([document]).rules)
        self.patch(RuleSet, "MEMO_SIZE", 1)
        self.assertEqual(rules.evaluate(ALICE, NOON).subHandling, SubHandling.ALLOW)
        self.assertEqual(rules.evaluate(BOB, NOON).subHandling, SubHandling.CONFIRM)
        self.assertEqual(len(rules._combined), 1)
        self.assertEqual(rules.evaluate(ALICE, NOON).subHandling, SubHandling.ALLOW)


class ExampleTests(SynchronousTestCase):
    """The examples of the RFCs, and an OMA-style document."""

    def test_rfc5025Example(self) -> None:
        """RFC 5025 section 6: the example document.

        It allows sip:user@example.com, who sees the services with sip and
        mailto URIs, all persons, activities, bare user input and the foo
        attribute of a vendor namespace; nobody else matches.
        """
        document = f"""<?xml version="1.0" encoding="UTF-8"?>
   <cr:ruleset xmlns="{PR}"
    xmlns:pr="{PR}"
    xmlns:cr="{CP}">
    <cr:rule id="a">
     <cr:conditions>
      <cr:identity>
       <cr:one id="sip:user@example.com"/>
      </cr:identity>
     </cr:conditions>
     <cr:actions>
      <pr:sub-handling>allow</pr:sub-handling>
     </cr:actions>
     <cr:transformations>
      <pr:provide-services>
       <pr:service-uri-scheme>sip</pr:service-uri-scheme>
       <pr:service-uri-scheme>mailto</pr:service-uri-scheme>
      </pr:provide-services>
      <pr:provide-persons>
       <pr:all-persons/>
      </pr:provide-persons>
      <pr:provide-activities>true</pr:provide-activities>
      <pr:provide-user-input>bare</pr:provide-user-input>
      <pr:provide-unknown-attribute
       ns="urn:vendor-specific:foo-namespace"
       name="foo">true</pr:provide-unknown-attribute>
     </cr:transformations>
    </cr:rule>
   </cr:ruleset>""".encode()
        rules = parseRuleSet([document])
        outcome = rules.evaluate(Watcher.fromURI("sip:user@example.com"), NOON)
        self.assertEqual(
            outcome,
            Outcome(
                SubHandling.ALLOW,
                Permissions(
                    services=Selection(schemes=frozenset({"sip", "mailto"})),
                    persons=EVERYTHING,
                    attributes=frozenset({"activities"}),
                    userInput=UserInput.BARE,
                    unknownAttributes=frozenset(
                        {("urn:vendor-specific:foo-namespace", "foo")}
                    ),
                ),
            ),
        )
        self.assertIs(rules.evaluate(ALICE, NOON), BLOCKED)

    def test_rfc4745Style(self) -> None:
        """A rule in the manner of RFC 4745 section 13's example.

        Identities, a sphere and a validity period together.
        """
        document = f"""<?xml version="1.0" encoding="UTF-8"?>
<ruleset xmlns="{CP}">
  <rule id="f3g44r1">
    <conditions>
      <sphere value="work"/>
      <identity>
        <one id="sip:alice@example.com"/>
        <one id="tel:+1-212-555-1234"/>
        <many domain="example.org"/>
      </identity>
      <validity>
        <from>2003-12-24T17:00:00+01:00</from>
        <until>2003-12-24T19:00:00+01:00</until>
      </validity>
    </conditions>
    <actions><sub-handling xmlns="{PR}">allow</sub-handling></actions>
    <transformations/>
  </rule>
</ruleset>""".encode()
        rules = parseRuleSet([document])
        during = parseDateTime("2003-12-24T17:30:00+01:00")
        after = parseDateTime("2003-12-24T19:00:00+01:00")
        for watcher in (ALICE, CAROL, Watcher.fromURI("tel:+1-212-555-1234")):
            self.assertEqual(
                rules.evaluate(watcher, during, "work").subHandling, SubHandling.ALLOW
            )
            self.assertIs(rules.evaluate(watcher, after, "work"), BLOCKED)
            self.assertIs(rules.evaluate(watcher, during, "home"), BLOCKED)
        self.assertIs(rules.evaluate(BOB, during, "work"), BLOCKED)

    def test_omaStyle(self) -> None:
        """An OMA presence rules document.

        The owner, granted and blocked lists, anonymous requests and
        everybody else.
        """
        anchor = (
            "http://xcap.example.com/resource-lists/users/sip:bob@example.com/index"
            "/~~/resource-lists/list%5b@name=%22{}%22%5d"
        )
        document = f"""<?xml version="1.0" encoding="UTF-8"?>
<cr:ruleset xmlns:ocp="{OCP}" xmlns:pr="{PR}" xmlns:cr="{CP}">
  <cr:rule id="wp_prs_allow_own">
    <cr:conditions><cr:identity><cr:one id="sip:bob@example.com"/></cr:identity>
    </cr:conditions>
    <cr:actions><pr:sub-handling>allow</pr:sub-handling></cr:actions>
    <cr:transformations>
      <pr:provide-services><pr:all-services/></pr:provide-services>
      <pr:provide-persons><pr:all-persons/></pr:provide-persons>
      <pr:provide-devices><pr:all-devices/></pr:provide-devices>
      <pr:provide-all-attributes/>
    </cr:transformations>
  </cr:rule>
  <cr:rule id="wp_prs_grantedcontacts">
    <cr:conditions><ocp:external-list>
      <ocp:entry anc="{anchor.format("oma_grantedcontacts")}"/>
    </ocp:external-list></cr:conditions>
    <cr:actions><pr:sub-handling>allow</pr:sub-handling></cr:actions>
    <cr:transformations>
      <pr:provide-services><pr:all-services/></pr:provide-services>
      <pr:provide-persons><pr:all-persons/></pr:provide-persons>
      <pr:provide-activities>true</pr:provide-activities>
    </cr:transformations>
  </cr:rule>
  <cr:rule id="wp_prs_blockedcontacts">
    <cr:conditions><ocp:external-list>
      <ocp:entry anc="{anchor.format("oma_blockedcontacts")}"/>
    </ocp:external-list></cr:conditions>
    <cr:actions><pr:sub-handling>block</pr:sub-handling></cr:actions>
  </cr:rule>
  <cr:rule id="wp_prs_unlisted">
    <cr:conditions><ocp:other-identity/></cr:conditions>
    <cr:actions><pr:sub-handling>confirm</pr:sub-handling></cr:actions>
  </cr:rule>
  <cr:rule id="wp_prs_anonymous">
    <cr:conditions><ocp:anonymous-request/></cr:conditions>
    <cr:actions><pr:sub-handling>block</pr:sub-handling></cr:actions>
  </cr:rule>
</cr:ruleset>""".encode()
        lists = {
            "oma_grantedcontacts": frozenset({ALICE.key}),
            "oma_blockedcontacts": frozenset({CAROL.key}),
        }
        rules = parseRuleSet([document])

        def at(watcher: Watcher) -> Outcome:
            return rules.evaluate(watcher, NOON, lists=lists)

        self.assertTrue(
            at(Watcher.fromURI("sip:bob@example.com")).permissions.allAttributes
        )
        self.assertEqual(at(ALICE).subHandling, SubHandling.ALLOW)
        self.assertEqual(at(ALICE).permissions.attributes, {"activities"})
        self.assertEqual(at(CAROL).status, TERMINATED)
        self.assertEqual(at(DAVE).status, PENDING)
        self.assertEqual(at(ANONYMOUS).status, TERMINATED)


#: Element names that occur in rules documents, for the structured fuzzer.
_NAMES = (
    [
        ("cr", n)
        for n in (
            "ruleset",
            "rule",
            "conditions",
            "actions",
            "transformations",
            "identity",
            "one",
            "many",
            "except",
            "sphere",
            "validity",
            "from",
            "until",
        )
    ]
    + [
        ("pr", n)
        for n in (
            "sub-handling",
            "provide-services",
            "all-services",
            "service-uri",
            "service-uri-scheme",
            "occurrence-id",
            "class",
            "provide-persons",
            "all-persons",
            "provide-devices",
            "all-devices",
            "deviceID",
            "provide-mood",
            "provide-user-input",
            "provide-unknown-attribute",
            "provide-all-attributes",
        )
    ]
    + [
        ("ocp", n)
        for n in ("external-list", "entry", "anonymous-request", "other-identity")
    ]
    + [("x", "other")]
)
_TEXTS = st.sampled_from(
    [
        "",
        "allow",
        "block",
        "true",
        "false",
        "full",
        "bare",
        "sip:alice@example.com",
        "2024-01-01T00:00:00Z",
        "2024-01-01T00:00:00",
        "work",
        " ",
        "\u00e9",
    ]
) | st.text(max_size=8)
_ATTRIBUTES = st.dictionaries(
    st.sampled_from(["id", "domain", "value", "ns", "name", "anc"]), _TEXTS, max_size=3
)


def _element(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    def build(
        name: tuple[str, str], attributes: dict[str, str], text: str, kids: list[str]
    ) -> str:
        attrs = "".join(f" {k}={quoteattr(v)}" for k, v in attributes.items())
        tag = f"{name[0]}:{name[1]}"
        return f"<{tag}{attrs}>{escape(text)}{''.join(kids)}</{tag}>"

    return st.builds(
        build,
        st.sampled_from(_NAMES),
        _ATTRIBUTES,
        _TEXTS,
        st.lists(children, max_size=4),
    )


_XML = st.recursive(st.just(""), _element, max_leaves=30)


def _tag(element: str, body: str = "", **attributes: str) -> str:
    """An element with raw XML content and quoted attributes."""
    attrs = "".join(f" {k}={quoteattr(v)}" for k, v in attributes.items())
    return f"<{element}{attrs}>{body}</{element}>"


def _value(*choices: str) -> st.SearchStrategy[str]:
    """Mostly one of the valid choices, sometimes anything."""
    valid = st.sampled_from(choices)
    return st.one_of(valid, valid, valid, valid, st.text(max_size=6))


def _content(*choices: str) -> st.SearchStrategy[str]:
    """`_value`, escaped as element content."""
    return _value(*choices).map(escape)


_IDS = _value("sip:alice@example.com", "sip:bob@example.com", "tel:+1555", "sip:x")
_DOMAINS = _value("example.com", "EXAMPLE.org", "")
_TIMES = _content(
    "2024-01-01T00:00:00Z", "2025-01-01T00:00:00+02:00", "2030-01-01T00:00:00Z"
)
_ONE = _IDS.map(lambda i: _tag("cr:one", id=i))
_EXCEPT = st.builds(
    lambda i, d: _tag("cr:except", id=i, domain=d), _IDS, _DOMAINS
) | _IDS.map(lambda i: _tag("cr:except", id=i))
_MANY = st.builds(
    lambda d, e: _tag("cr:many", "".join(e), domain=d),
    _DOMAINS,
    st.lists(_EXCEPT, max_size=2),
) | st.lists(_EXCEPT, max_size=2).map(lambda e: _tag("cr:many", "".join(e)))
_CONDITION = st.one_of(
    st.lists(_ONE | _MANY, min_size=1, max_size=3).map(
        lambda c: _tag("cr:identity", "".join(c))
    ),
    _value("work", "home", "work home").map(lambda v: _tag("cr:sphere", value=v)),
    st.lists(st.tuples(_TIMES, _TIMES), min_size=1, max_size=2).map(
        lambda pairs: _tag(
            "cr:validity",
            "".join(_tag("cr:from", a) + _tag("cr:until", b) for a, b in pairs),
        )
    ),
    st.lists(
        _value("a", "b", "http://x/~~/resource-lists/list%5b@name=%22a%22%5d")
    ).map(
        lambda a: _tag(
            "ocp:external-list", "".join(_tag("ocp:entry", anc=x) for x in a)
        )
    ),
    st.just(_tag("ocp:anonymous-request")),
    st.just(_tag("ocp:other-identity")),
    st.just(_tag("x:moon")),
)
_SELECTOR = st.builds(
    lambda n, v: _tag("pr:" + n, v),
    st.sampled_from(
        ["service-uri", "service-uri-scheme", "occurrence-id", "class", "deviceID"]
    ),
    _content("sip", "t1", "sip:alice@example.com", "urn:x"),
)
_TRANSFORMATION = st.one_of(
    st.builds(
        lambda kind, everything, picks: _tag(
            "pr:provide-" + kind,
            _tag("pr:all-" + kind) if everything else "".join(picks),
        ),
        st.sampled_from(["services", "persons", "devices"]),
        st.booleans(),
        st.lists(_SELECTOR, max_size=3),
    ),
    st.builds(
        lambda n, v: _tag("pr:provide-" + n, v),
        st.sampled_from(["mood", "note", "activities", "sphere", "deviceID"]),
        _content("true", "false", "1"),
    ),
    _content("false", "bare", "thresholds", "full").map(
        lambda v: _tag("pr:provide-user-input", v)
    ),
    st.builds(
        lambda ns, name, v: _tag("pr:provide-unknown-attribute", v, ns=ns, name=name),
        _value("urn:a"),
        _value("x"),
        _content("true", "false"),
    ),
    st.just(_tag("pr:provide-all-attributes")),
    st.just(_tag("x:provide-more", "true")),
)
_RULE = st.builds(
    lambda c, h, t: _tag(
        "cr:rule",
        (_tag("cr:conditions", "".join(c)) if c is not None else "")
        + (_tag("cr:actions", _tag("pr:sub-handling", h)) if h is not None else "")
        + _tag("cr:transformations", "".join(t)),
        id="r",
    ),
    st.none() | st.lists(_CONDITION, max_size=3),
    st.none() | _content("allow", "block", "confirm", "polite-block"),
    st.lists(_TRANSFORMATION, max_size=4),
)
_RULES = st.lists(_RULE, max_size=5).map("".join)


_ENTRY = _IDS.map(lambda uri: _tag("entry", uri=uri)) | st.just("<entry-ref/>")
_LIST_ELEMENTS = st.recursive(
    _ENTRY,
    lambda kids: st.builds(
        lambda name, children: _tag("list", "".join(children), **name),
        st.just({}) | _value("a", "b").map(lambda n: {"name": n}),
        st.lists(kids, max_size=4),
    ),
    max_leaves=12,
)
_LISTS = st.lists(_LIST_ELEMENTS, max_size=3).map(
    lambda children: _tag("resource-lists", "".join(children), xmlns=RL).encode()
)


class FuzzTests(SynchronousTestCase):
    """Whatever the bytes, the parser raises `RulesError` or gives rules."""

    def check(self, document: bytes) -> None:
        """Parse, and if the document is readable, evaluate it."""
        try:
            rules = parseRuleSet([document])
        except RulesError:
            return
        for watcher in (ALICE, ANONYMOUS):
            outcome = rules.evaluate(
                watcher, NOON, "work", {"a": frozenset({ALICE.key})}
            )
            self.assertIn(outcome.status, (ACTIVE, PENDING, TERMINATED))
            hash(outcome)

    @given(st.binary(max_size=300))
    def test_bytes(self, document: bytes) -> None:
        """Arbitrary bytes."""
        self.check(document)

    @given(_XML)
    def test_structured(self, body: str) -> None:
        """Well-formed documents built from the rules vocabulary."""
        document = (
            f'<cr:ruleset xmlns:cr="{CP}" xmlns:pr="{PR}" xmlns:ocp="{OCP}" '
            f'xmlns:x="urn:example:x">{body}</cr:ruleset>'
        )
        self.check(document.encode())

    @given(st.binary(max_size=300) | _LISTS)
    def test_resourceLists(self, document: bytes) -> None:
        """A resource-lists document: RulesError, or lists of members."""
        try:
            lists = resourceLists(document)
        except RulesError:
            return
        for members in lists.values():
            self.assertIsInstance(members, frozenset)

    @given(_RULES)
    def test_rules(self, body: str) -> None:
        """Rules shaped as the schema says, with values valid or not."""
        document = (
            f'<cr:ruleset xmlns:cr="{CP}" xmlns:pr="{PR}" xmlns:ocp="{OCP}" '
            f'xmlns:x="urn:example:x">{body}</cr:ruleset>'
        )
        self.check(document.encode())

    @given(_XML)
    def test_anyRoot(self, body: str) -> None:
        """The same vocabulary with whatever root comes out."""
        head, _, rest = body.partition(">")
        declarations = (
            f' xmlns:cr="{CP}" xmlns:pr="{PR}" xmlns:ocp="{OCP}"'
            ' xmlns:x="urn:example:x">'
        )
        self.check((head + declarations + rest if body else "").encode())
