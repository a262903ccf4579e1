"""Tests for presence.auth.digest: hashes, headers, nonces and nonce counts."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from presence.auth.digest import (
    DigestCredentials,
    DigestError,
    NonceCounts,
    Nonces,
    NonceState,
    answerChallenge,
    challenge,
    computeHA1,
    digestResponse,
    parseAuthParams,
    parseAuthParamsFully,
    parseChallenge,
    parseCredentials,
    parsePlainDigest,
    storedHA1,
)
from presence.storage.credentials import Credentials

#: RFC 7616 section 3.9.1.
USER = "Mufasa"
REALM = "http-auth@example.org"
PASSWORD = "Circle of Life"
NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


class RFC7616VectorTests(SynchronousTestCase):
    """RFC 7616 section 3.9.1, "Example with SHA-256 and MD5".

    "The following example assumes that an access-protected document is
    being requested from the server via a GET request. The URI of the
    document is "http://www.example.org/dir/index.html". Both client and
    server know that the username for this document is "Mufasa" and the
    password is "Circle of Life" ( with one space between each of the three
    words)."
    """

    def response(self, algorithm: str) -> str:
        """The example's response with ``algorithm``."""
        ha1 = computeHA1(algorithm, USER, REALM, PASSWORD)
        return digestResponse(
            algorithm, ha1, NONCE, "GET", "/dir/index.html", "00000001", CNONCE
        )

    def test_md5(self) -> None:
        """response="8ca523f5e9506fed4657c9700eebdbec" with MD5."""
        self.assertEqual(self.response("MD5"), "8ca523f5e9506fed4657c9700eebdbec")

    def test_sha256(self) -> None:
        """response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"."""
        self.assertEqual(
            self.response("SHA-256"),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
        )

    def test_exampleHeaderParses(self) -> None:
        """The example's Authorization header (SHA-256) reads back."""
        header = (
            'Digest username="Mufasa", realm="http-auth@example.org",'
            ' uri="/dir/index.html", algorithm=SHA-256,'
            f' nonce="{NONCE}", nc=00000001, cnonce="{CNONCE}", qop=auth,'
            ' response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856'
            'cb6c1",'
            ' opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
        )
        self.assertEqual(
            parseCredentials(header),
            DigestCredentials(
                username=USER,
                realm=REALM,
                nonce=NONCE,
                uri="/dir/index.html",
                response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
                algorithm="SHA-256",
                nc="00000001",
                cnonce=CNONCE,
            ),
        )

    def test_answerChallenge(self) -> None:
        """The client's side gives the example's response to the example's challenge."""
        value = answerChallenge(
            f'Digest realm="{REALM}", qop="auth", algorithm=MD5, nonce="{NONCE}"',
            USER,
            PASSWORD,
            "GET",
            "/dir/index.html",
            cnonce=CNONCE,
        )
        credentials = parseCredentials(value)
        assert credentials is not None
        self.assertEqual(credentials.response, "8ca523f5e9506fed4657c9700eebdbec")


class HA1Tests(SynchronousTestCase):
    """Which HA1 a user's row gives for an algorithm."""

    def test_storedHashFirst(self) -> None:
        """The hash kept for the algorithm is used, whatever the password says."""
        row = Credentials("bob", "example.com", "pw", "A" * 32, "b" * 64)
        self.assertEqual(storedHA1(row, "MD5", "example.com"), "a" * 32)
        self.assertEqual(storedHA1(row, "SHA-256", "example.com"), "b" * 64)

    def test_passwordWhenNoHash(self) -> None:
        """The clear password is used only for an algorithm whose hash is empty."""
        row = Credentials("bob", "example.com", "pw", ha1="a" * 32)
        self.assertEqual(
            storedHA1(row, "SHA-512-256", "example.com"),
            computeHA1("SHA-512-256", "bob", "example.com", "pw"),
        )

    def test_nothing(self) -> None:
        """No hash and no password: the row cannot answer the algorithm."""
        self.assertIsNone(
            storedHA1(Credentials("bob", "x", ha1="a" * 32), "SHA-256", "x")
        )


class HeaderTests(SynchronousTestCase):
    """Reading Authorization and writing WWW-Authenticate."""

    def test_challenge(self) -> None:
        """A challenge names realm, nonce, algorithm and qop="auth"; stale on demand."""
        self.assertEqual(
            challenge("example.com", "n1", "SHA-256"),
            'Digest realm="example.com", nonce="n1", algorithm=SHA-256, qop="auth"',
        )
        params = parseChallenge(challenge("example.com", "n1", "MD5", stale=True))
        self.assertEqual(params["stale"], "true")
        self.assertEqual(params["qop"], "auth")

    def test_otherScheme(self) -> None:
        """Another scheme is not this server's: None."""
        self.assertIsNone(parseCredentials("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="))

    def test_caseAndSpacing(self) -> None:
        """Scheme, names and the algorithm are case-insensitive; spaces are free."""
        credentials = parseCredentials(
            'DIGEST  USERNAME = "bob" ,realm="r",nonce="n",uri="sip:b@h",'
            'response="ABCD",algorithm=sha-256,QOP=Auth,nc=0000000A,cnonce="c"'
        )
        assert credentials is not None
        self.assertEqual(
            (credentials.username, credentials.algorithm, credentials.nonceCount),
            ("bob", "SHA-256", 10),
        )
        self.assertEqual(credentials.response, "abcd")

    def test_unknownAlgorithm(self) -> None:
        """An algorithm this server does not know parses, as None."""
        credentials = parseCredentials(
            'Digest username="b", realm="r", nonce="n", uri="u", response="x",'
            ' algorithm=SHA-1, qop=auth, nc=00000001, cnonce="c"'
        )
        assert credentials is not None
        self.assertIsNone(credentials.algorithm)

    def test_quotedEscapes(self) -> None:
        """Quoted strings lose their quotes and backslashes."""
        self.assertEqual(
            parseAuthParams('Digest username="a\\"b", realm="x,y"')[1],
            {"username": 'a"b', "realm": "x,y"},
        )

    def test_refused(self) -> None:
        """What a digest response must have, and what it may not be."""
        good = (
            'username="b", realm="r", nonce="n", uri="u", response="x",'
            ' qop=auth, nc=00000001, cnonce="c"'
        )
        for value in (
            "",
            "Digest",
            'Digest username="b"',
            f"Digest {good.replace('qop=auth, ', '')}",
            f"Digest {good.replace('qop=auth', 'qop=auth-int')}",
            f"Digest {good.replace('nc=00000001', 'nc=1')}",
            "Digest " + good.replace('cnonce="c"', 'cnonce=""'),
            f'Digest {good}, username="again"',
            f"Digest {good}, userhash=true",
            f"Digest {good}, username*=UTF-8''b",
            'Digest username="unterminated, realm="r"',
            "Digest username=b realm=r",
            "Digest =b",
        ):
            self.assertRaises(DigestError, parseCredentials, value)

    @given(st.text())
    def test_fuzzRaisesOnlyDigestError(self, value: str) -> None:
        """Any text either parses or raises DigestError."""
        try:
            parseCredentials(value)
        except DigestError:
            pass

    @given(
        st.lists(
            st.tuples(
                st.sampled_from(
                    [
                        "username",
                        "realm",
                        "nonce",
                        "uri",
                        "response",
                        "qop",
                        "nc",
                        "cnonce",
                        "algorithm",
                        "userhash",
                        "x",
                    ]
                ),
                st.one_of(
                    st.text(max_size=12),
                    st.text(max_size=12).map(lambda t: f'"{t}"'),
                    st.sampled_from(["auth", "00000001", "MD5", '"', '\\"', ""]),
                ),
            ),
            max_size=10,
        ),
        st.sampled_from([", ", ",", " ", ",,"]),
    )
    def test_fuzzStructured(self, params: list[tuple[str, str]], sep: str) -> None:
        """Digest-looking garbage either parses or raises DigestError."""
        value = "Digest " + sep.join(f"{k}={v}" for k, v in params)
        try:
            parseCredentials(value)
        except DigestError:
            pass


#: Names a client sends, and some no client should.
_NAMES = [
    "username",
    "realm",
    "nonce",
    "uri",
    "response",
    "qop",
    "nc",
    "cnonce",
    "algorithm",
    "opaque",
    "Nonce",
    "USERNAME",
    "user name",
    "x(y)",
    "a;b",
    "",
    "é",
]

#: Characters of values: those of the common shape (a comma and a space
#: are, in a quoted value), and a few of every kind the parsers treat apart.
_CLEAN_CHARACTERS = "aZ09:@;=/.-_ ,"
_VALUE_CHARACTERS = _CLEAN_CHARACTERS + '"\\\t\r\né\x00\x1f\x7f\x85\xa0'


def _value(text: str, quoted: bool) -> str:
    return f'"{text}"' if quoted else text


def _often(common: list[str], rare: list[str]) -> st.SearchStrategy[str]:
    """Mostly one of ``common``, one time in ten one of ``rare``."""
    return st.one_of(*[st.sampled_from(common)] * 9, st.sampled_from(rare))


@st.composite
def _pair(draw: st.DrawFn) -> str:
    """A ``name=value`` pair, mostly as clients write them."""
    name = draw(_often(_NAMES[:10], _NAMES[10:]))
    equals = draw(_often(["="], [" = ", "= ", "\t=", "==", ""]))
    quoted = draw(st.booleans())
    if draw(st.integers(0, 9)):
        clean = _CLEAN_CHARACTERS if quoted else _CLEAN_CHARACTERS[:-2]
        text = draw(st.text(alphabet=clean, min_size=0 if quoted else 1, max_size=8))
    else:
        text = draw(st.text(alphabet=_VALUE_CHARACTERS, max_size=8))
    return f"{name}{equals}{_value(text, quoted)}"


#: Authorization-looking values: a prefix, pairs joined by a separator, a
#: suffix; mostly as clients write them, every part now and then otherwise.
_DIGESTISH = st.builds(
    lambda prefix, pairs, separator, suffix: prefix + separator.join(pairs) + suffix,
    _often(
        ["Digest "],
        ["digest ", "DIGEST ", "Digest\t", " Digest ", "Digest  ", "Digestx "],
    ),
    st.one_of(
        *[st.lists(_pair(), max_size=9, unique_by=lambda p: p.split("=")[0].lower())]
        * 9,
        st.lists(_pair(), max_size=9),
    ),
    _often([", "], [",", " , ", ",,", " ", ",\t"]),
    _often([""], [" ", ",", ", ", "\t", "\n"]),
)


class FastParserTests(SynchronousTestCase):
    """`parsePlainDigest`, the fast path, against the whole grammar.

    RFC 7616 section 3.4 and RFC 3261 section 25.1 define the grammar;
    the fast path reads the common shape of it and must agree with
    `parseAuthParamsFully` wherever it answers, leaving everything else to it.
    """

    def assertAgrees(self, value: str) -> dict[str, str] | None:
        """The fast path answers as the whole grammar does, or not at all."""
        fast = parsePlainDigest(value)
        if fast is not None:
            self.assertEqual(parseAuthParamsFully(value), ("digest", fast), value)
        return fast

    def test_clientsTakeTheFastPath(self) -> None:
        """What clients send is read by the fast path, as the grammar reads it."""
        for value in (
            answerChallenge(
                f'Digest realm="{REALM}", qop="auth", algorithm=SHA-256,'
                f' nonce="{NONCE}"',
                USER,
                PASSWORD,
                "PUBLISH",
                "sip:mufasa@example.org;transport=udp",
            ),
            'Digest username="Mufasa", realm="http-auth@example.org",'
            ' uri="/dir/index.html", algorithm=SHA-256,'
            f' nonce="{NONCE}", nc=00000001, cnonce="{CNONCE}", qop=auth,'
            ' response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856'
            'cb6c1", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"',
            # sipp's and many phones' order and spacing.
            'Digest username="bob",realm="example.com",uri="sip:bob@example.com",'
            'nonce="n",response="r",algorithm=MD5,cnonce="c",qop=auth,nc=00000001',
            'digest username="bob" , realm = "example.com", nonce=""',
            'Digest uri="sip:a@b;x=1,2", nc=1',
            "Digest nc=1,",
        ):
            self.assertIsNotNone(self.assertAgrees(value), value)

    def test_otherShapesLeftToTheGrammar(self) -> None:
        """Escapes, tabs, non-ASCII, upper-case names: the whole grammar's."""
        for value, params in (
            ('Digest username="a\\"b", realm="r"', {"username": 'a"b', "realm": "r"}),
            ("Digest\tnc=1,\tqop=auth", {"nc": "1", "qop": "auth"}),
            (" Digest nc=1", {"nc": "1"}),
            ('Digest username="élise"', {"username": "élise"}),
            ('Digest USERNAME="bob", Realm=r', {"username": "bob", "realm": "r"}),
        ):
            self.assertIsNone(parsePlainDigest(value), value)
            self.assertEqual(parseAuthParams(value), ("digest", params), value)
        self.assertIsNone(parsePlainDigest('Basic realm="r"'))
        self.assertEqual(parseAuthParams('Basic realm="r"'), ("basic", {"realm": "r"}))

    def test_malformedLeftToTheGrammar(self) -> None:
        """The fast path never refuses: the grammar raises what it raises."""
        for value in (
            "Digest ",
            "Digest nc=1, nc=2",
            "Digest nc=1, NC=2",
            'Digest username="unterminated, realm="r"',
            "Digest username=b realm=r",
            "Digest =b",
            "Digest a b=c",
            'Digest a="b"c',
        ):
            self.assertIsNone(parsePlainDigest(value), value)
        self.assertRaises(DigestError, parseAuthParams, "Digest nc=1, NC=2")

    @settings(max_examples=500)
    @given(_DIGESTISH)
    def test_fuzzAgreesOnDigestLikeValues(self, value: str) -> None:
        """On Authorization-looking text, the fast path agrees or stands aside."""
        self.assertAgrees(value)

    @given(st.text())
    def test_fuzzAgreesOnText(self, value: str) -> None:
        """On any text, the fast path agrees or stands aside, and never raises."""
        self.assertAgrees("Digest " + value)
        self.assertAgrees(value)

    @given(
        st.dictionaries(
            st.from_regex(r"[a-z][a-z0-9\-]{0,8}", fullmatch=True),
            st.tuples(
                st.from_regex(r"[!#-+\--\[\]-~][ !#-+\--\[\]-~]{0,20}", fullmatch=True),
                st.booleans(),
            ),
            min_size=1,
            max_size=10,
        )
    )
    def test_fuzzCommonShapeFast(self, params: dict[str, tuple[str, bool]]) -> None:
        """Any value of the common shape is read by the fast path, right."""
        pairs = []
        expected = {}
        for name, (text, quoted) in params.items():
            if not quoted:
                text = text.replace(" ", "")
                if not text:
                    continue
            pairs.append(f"{name}={_value(text, quoted)}")
            expected[name] = text
        if not pairs:
            return
        value = "Digest " + ", ".join(pairs)
        self.assertEqual(self.assertAgrees(value), expected)

    @settings(max_examples=500)
    @given(
        st.sampled_from(
            [
                'Digest username="bob", realm="example.com", nonce="n0-_",'
                ' uri="sip:bob@example.com", response="0a9f", algorithm=SHA-256,'
                ' qop=auth, nc=00000001, cnonce="c"',
                'Digest username="bob",realm="example.com",nonce="n",'
                'uri="sip:bob@example.com;transport=tcp",response="0a9f",'
                'algorithm=MD5,cnonce="c",qop=auth,nc=00000002',
            ]
        ),
        st.lists(
            st.tuples(
                st.integers(0, 200),
                st.sampled_from(["insert", "replace", "delete"]),
                st.sampled_from(_VALUE_CHARACTERS + "xA=,"),
            ),
            min_size=1,
            max_size=3,
        ),
    )
    def test_fuzzAgreesNearTheCommonShape(
        self, value: str, edits: list[tuple[int, str, str]]
    ) -> None:
        """A client's value with a character or three changed: agreed or left."""
        for position, edit, character in edits:
            position %= len(value) + 1
            end = position if edit == "insert" else position + 1
            value = (
                value[:position] + ("" if edit == "delete" else character) + value[end:]
            )
        self.assertAgrees(value)


class NonceTests(SynchronousTestCase):
    """Stateless nonces."""

    def setUp(self) -> None:
        """Nonces of 300 s on a fake clock."""
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.nonces = Nonces(b"k" * 32, self.clock, 300)

    def test_valid(self) -> None:
        """A nonce issued for a realm is valid for it, and says when it was issued."""
        nonce = self.nonces.issue("example.com")
        self.assertEqual(
            self.nonces.check(nonce, "example.com"), (NonceState.VALID, 1_000_000)
        )

    def test_unique(self) -> None:
        """Two nonces issued in the same second differ (a random salt)."""
        self.assertNotEqual(self.nonces.issue("r"), self.nonces.issue("r"))

    def test_stale(self) -> None:
        """A genuine nonce a lifetime old is stale, not forged."""
        nonce = self.nonces.issue("example.com")
        self.clock.advance(299)
        self.assertEqual(self.nonces.check(nonce, "example.com")[0], NonceState.VALID)
        self.clock.advance(1)
        self.assertEqual(self.nonces.check(nonce, "example.com")[0], NonceState.STALE)

    def test_forged(self) -> None:
        """Another realm, another secret, a changed byte, or not a nonce: forged."""
        nonce = self.nonces.issue("example.com")
        other = Nonces(b"j" * 32, self.clock, 300)
        changed = ("A" if nonce[5] != "A" else "B").join([nonce[:5], nonce[6:]])
        for candidate, realm in [
            (nonce, "example.org"),
            (other.issue("example.com"), "example.com"),
            (changed, "example.com"),
            ("", "example.com"),
            ("!" * 43, "example.com"),
            ("\u00e9" * 43, "example.com"),
            (nonce[:-1], "example.com"),
        ]:
            self.assertEqual(
                self.nonces.check(candidate, realm)[0], NonceState.FORGED, candidate
            )

    def test_sharedSecret(self) -> None:
        """A server with the same secret verifies another's nonce."""
        twin = Nonces(b"k" * 32, self.clock, 300)
        self.assertEqual(twin.check(self.nonces.issue("r"), "r")[0], NonceState.VALID)

    @given(st.text(max_size=60))
    def test_fuzz(self, text: str) -> None:
        """Any text is a state, never an exception."""
        self.assertIn(self.nonces.check(text, "r")[0], list(NonceState))


class RememberedNonceTests(SynchronousTestCase):
    """Genuine nonces remembered, so that a reused nonce costs no HMAC.

    What the memory may not change: RFC 7616 section 3.3 "The server
    can also reject a nonce that is too old" (stale, at the same moment as
    without it), and a nonce that was not issued for the realm, or not with
    this secret, is never valid.
    """

    def setUp(self) -> None:
        """Nonces of 300 s on a fake clock, at most 3 remembered."""
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.nonces = Nonces(b"k" * 32, self.clock, 300, cacheLimit=3)
        self.twin = Nonces(b"k" * 32, self.clock, 300, cacheLimit=3)
        self.hmacs = 0
        sign = self.twin._sign

        def counted(body: bytes, realm: str) -> bytes:
            self.hmacs += 1
            return sign(body, realm)

        self.twin._sign = counted  # type: ignore[method-assign]

    def test_issuedRemembered(self) -> None:
        """A nonce issued here is remembered at once, with its issue time."""
        nonce = self.nonces.issue("r")
        self.assertEqual(len(self.nonces), 1)
        self.assertEqual(self.nonces.check(nonce, "r"), (NonceState.VALID, 1_000_000))

    def test_otherServersRememberedOnceVerified(self) -> None:
        """Another server's nonce costs one HMAC, then none."""
        nonce = self.nonces.issue("r")
        for _ in range(3):
            self.assertEqual(self.twin.check(nonce, "r")[0], NonceState.VALID)
        self.assertEqual(self.hmacs, 1)
        self.assertEqual(len(self.twin), 1)

    def test_forgedNeverRemembered(self) -> None:
        """A forged nonce is checked again every time, and never kept."""
        forged = Nonces(b"j" * 32, self.clock, 300).issue("r")
        for _ in range(2):
            self.assertEqual(self.twin.check(forged, "r")[0], NonceState.FORGED)
        self.assertEqual((self.hmacs, len(self.twin)), (2, 0))

    def test_realmIsPartOfTheKey(self) -> None:
        """A nonce remembered for one realm is still forged for another."""
        nonce = self.nonces.issue("example.com")
        self.nonces.check(nonce, "example.com")
        self.assertEqual(self.nonces.check(nonce, "example.org")[0], NonceState.FORGED)

    def test_staleOnTime(self) -> None:
        """A remembered nonce goes stale at its lifetime, as one verified afresh."""
        nonce = self.nonces.issue("r")
        self.clock.advance(299)
        self.assertEqual(self.nonces.check(nonce, "r")[0], NonceState.VALID)
        self.clock.advance(1)
        self.assertEqual(self.nonces.check(nonce, "r")[0], NonceState.STALE)
        self.assertEqual(self.twin.check(nonce, "r")[0], NonceState.STALE)

    def test_bounded(self) -> None:
        """At most cacheLimit are kept; a forgotten nonce is verified again."""
        nonces = [self.nonces.issue("r") for _ in range(5)]
        self.assertEqual(len(self.nonces), 3)
        for nonce in nonces:
            self.assertEqual(self.nonces.check(nonce, "r")[0], NonceState.VALID)
        self.assertLessEqual(len(self.nonces), 3)

    def test_expiredForgotten(self) -> None:
        """Nonces past their lifetime are forgotten as others are remembered."""
        self.nonces.issue("r")
        self.clock.advance(300)
        self.nonces.issue("r")
        self.assertEqual(len(self.nonces), 1)


class NonceCountTests(SynchronousTestCase):
    """Replay detection by nonce count."""

    def setUp(self) -> None:
        """Counts of 300 s nonces on a fake clock, at most 3 nonces."""
        self.clock = Clock()
        self.clock.advance(1000)
        self.counts = NonceCounts(self.clock, 300, limit=3)

    def test_growing(self) -> None:
        """A count must grow; the same or a lower one is a replay."""
        self.assertTrue(self.counts.advance("n", 1000, 1))
        self.assertFalse(self.counts.advance("n", 1000, 1))
        self.assertTrue(self.counts.advance("n", 1000, 3))
        self.assertFalse(self.counts.advance("n", 1000, 2))
        self.assertTrue(self.counts.advance("other", 1000, 1))

    def test_expire(self) -> None:
        """An entry goes when its nonce expires."""
        self.counts.advance("n", 1000, 1)
        self.clock.advance(300)
        self.counts.advance("m", 1300, 1)
        self.assertEqual(len(self.counts), 1)

    def test_boundedWithFloor(self) -> None:
        """Beyond the limit the oldest entry goes; its nonce is refused from then on.

        So is any nonce issued no later than it that has no entry.
        """
        for i, nonce in enumerate("abc"):
            self.assertTrue(self.counts.advance(nonce, 1000 + i, 5))
        self.assertTrue(self.counts.advance("d", 1003, 1))
        self.assertEqual(len(self.counts), 3)
        self.assertEqual(self.counts.floor, 1000)
        self.assertFalse(self.counts.advance("a", 1000, 6))
        self.assertFalse(self.counts.advance("older", 999, 1))
        self.assertTrue(self.counts.advance("newer", 1004, 1))
