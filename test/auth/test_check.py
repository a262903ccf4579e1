"""Digest authentication and asserted identities through the in-memory server.

RFC 3261 section 22, RFC 7616, RFC 8760; RFC 3325 for trusted peers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from presence.auth.check import claimedAddress
from presence.auth.digest import (
    answerChallenge,
    computeHA1,
    parseChallenge,
)
from presence.sip.message import SIPRequest, SIPResponse
from presence.sip.parser import parseDatagram
from presence.storage.credentials import (
    CREDENTIALS_TTL,
    CachingCredentialStore,
    Credentials,
    ICredentialStore,
    MemoryCredentialStore,
)
from presence.storage.errors import StorageError
from presence.testing import UA, Server, Subscriber, pidf

SECRET = "a nonce secret shared by two servers"


def addUser(
    server: Server, username: str, password: str, domain: str = "example.com"
) -> None:
    """Provision a user as presence-ctl would: every hash, no clear password."""
    store = server.stack.credentials
    assert isinstance(store, MemoryCredentialStore)
    realm = server.config.authRealm or domain
    store.put(
        Credentials(
            username,
            domain,
            ha1=computeHA1("MD5", username, realm, password),
            ha1Sha256=computeHA1("SHA-256", username, realm, password),
        )
    )


def challenges(response: SIPResponse) -> list[dict[str, str]]:
    """The parameters of each WWW-Authenticate of a response, in order."""
    return [parseChallenge(v) for v in response.headerLines("www-authenticate")]


def authorization(
    response: SIPResponse,
    username: str,
    password: str,
    method: str,
    uri: str,
    algorithm: str = "SHA-256",
    nc: int = 1,
) -> str:
    """Answer the challenge of ``algorithm`` in a 401."""
    for value in response.headerLines("www-authenticate"):
        if parseChallenge(value)["algorithm"] == algorithm:
            return answerChallenge(value, username, password, method, uri, nc=nc)
    raise AssertionError(f"no {algorithm} challenge in {response}")


class AuthTestCase(SynchronousTestCase):
    """A server with authentication on; alice and bob are users of example.com."""

    serverSettings: ClassVar[dict[str, Any]] = {}

    def setUp(self) -> None:
        """Start the server, provision alice and bob, make their user agents."""
        self.server = self.makeServer()
        self.alice = Subscriber(self.server, "alice", "192.0.2.20", 5070)
        self.bob = Subscriber(self.server, "bob", "192.0.2.21", 5071)

    def makeServer(self, **settings: Any) -> Server:
        """A server with authentication on and alice's and bob's credentials."""
        server = Server(
            **{
                "authentication": True,
                "nonceSecret": SECRET,
                **self.serverSettings,
                **settings,
            }
        )
        self.addCleanup(server.close)
        addUser(server, "alice", "alice's password")
        addUser(server, "bob", "bob's password")
        return server

    def publish(
        self, ua: UA, authorization: str | None = None, presentity: str | None = None
    ) -> SIPResponse:
        """PUBLISH a PIDF, with an Authorization header if given."""
        extra = [("Authorization", authorization)] if authorization else []
        return ua.publish(pidf(user=ua.user), presentity=presentity, extra=extra)

    def publishAs(
        self,
        ua: UA,
        username: str,
        password: str,
        algorithm: str = "SHA-256",
        presentity: str | None = None,
    ) -> SIPResponse:
        """PUBLISH, answer the challenge, and return the final response."""
        presentity = presentity or ua.aor
        challenged = self.publish(ua, presentity=presentity)
        self.assertEqual(challenged.code, 401)
        value = authorization(
            challenged, username, password, "PUBLISH", presentity, algorithm
        )
        return self.publish(ua, value, presentity)


class ChallengeTests(AuthTestCase):
    """What is challenged, and how."""

    def test_challenge(self) -> None:
        """RFC 8760 section 2.3: one challenge per algorithm, SHA-256 first.

        RFC 3261 section 22.2: the UAS "can challenge the originator to
        provide credentials by rejecting the request with a 401
        (Unauthorized) status code"; each challenge has qop="auth", the
        realm is the domain of the address of record, and every nonce is
        fresh.
        """
        response = self.publish(self.bob)
        self.assertEqual(response.code, 401)
        found = challenges(response)
        self.assertEqual([c["algorithm"] for c in found], ["SHA-256", "MD5"])
        for params in found:
            self.assertEqual(params["qop"], "auth")
            self.assertEqual(params["realm"], "example.com")
            self.assertNotIn("stale", params)
        self.assertNotEqual(found[0]["nonce"], challenges(self.publish(self.bob))[0])
        self.assertEqual(
            self.successResultOf(
                self.server.store.publications("bob@example.com", "presence")
            ),
            [],
        )

    def test_methodsChallenged(self) -> None:
        """PUBLISH, SUBSCRIBE and REGISTER are challenged; OPTIONS is not."""
        self.assertEqual(self.bob.subscribe("sip:alice@example.com").code, 401)
        self.bob.send(
            self.bob.request("REGISTER", "sip:example.com", to="<sip:bob@example.com>")
        )
        self.assertEqual(self.bob.response().code, 401)
        self.bob.send(self.bob.request("OPTIONS", "sip:example.com"))
        self.assertEqual(self.bob.response().code, 200)

    def test_algorithmsConfigured(self) -> None:
        """auth_algorithms chooses the challenges and their order."""
        server = self.makeServer(authAlgorithms=("MD5",))
        response = UA(server, "bob").publish(pidf())
        self.assertEqual([c["algorithm"] for c in challenges(response)], ["MD5"])

    def test_offAllowsAll(self) -> None:
        """With authentication off (the default) nothing is challenged."""
        server = Server()
        self.addCleanup(server.close)
        self.assertEqual(UA(server, "bob").publish(pidf()).code, 200)


class RealmTests(AuthTestCase):
    """The realm: the domain of the address of record being authenticated."""

    def test_claimedAddress(self) -> None:
        """REGISTER: To; PUBLISH: the Request-URI; SUBSCRIBE: From, in a dialog too."""
        ua = UA(self.server, "alice")

        def claimed(method: str, uri: str, **kw: Any) -> str:
            message = parseDatagram(ua.request(method, uri, **kw))
            assert isinstance(message, SIPRequest)
            return str(claimedAddress(message))

        self.assertEqual(
            claimed("REGISTER", "sip:a.org", to="<sip:carol@b.org>"), "sip:carol@b.org"
        )
        self.assertEqual(claimed("PUBLISH", "sip:carol@b.org"), "sip:carol@b.org")
        self.assertEqual(claimed("SUBSCRIBE", "sip:carol@b.org"), ua.aor)
        self.assertEqual(
            claimed("SUBSCRIBE", "sip:presence@192.0.2.10", toTag="t"), ua.aor
        )

    def test_watcherDomain(self) -> None:
        """A SUBSCRIBE to another domain is challenged in the watcher's domain."""
        response = self.alice.subscribe("sip:carol@example.org")
        self.assertEqual({c["realm"] for c in challenges(response)}, {"example.com"})

    def test_configuredRealm(self) -> None:
        """auth_realm replaces the domain in every challenge; users still log in."""
        server = self.makeServer(authRealm="presence")
        bob = UA(server, "bob")
        response = bob.publish(pidf())
        self.assertEqual({c["realm"] for c in challenges(response)}, {"presence"})
        value = authorization(
            response, "bob", "bob's password", "PUBLISH", "sip:bob@example.com"
        )
        self.assertEqual(
            bob.publish(pidf(), extra=[("Authorization", value)]).code, 200
        )


class DigestTests(AuthTestCase):
    """Responses verified, and refused."""

    def test_sha256(self) -> None:
        """A SHA-256 response with the right password: 200."""
        self.assertEqual(
            self.publishAs(self.bob, "bob", "bob's password", "SHA-256").code, 200
        )

    def test_md5(self) -> None:
        """An MD5 response with the right password: 200."""
        self.assertEqual(
            self.publishAs(self.bob, "bob", "bob's password", "MD5").code, 200
        )

    def test_clearPasswordOnly(self) -> None:
        """A row with only a clear password (no hash) authenticates with both."""
        store = self.server.stack.credentials
        assert isinstance(store, MemoryCredentialStore)
        store.put(Credentials("carol", "example.com", password="carol's"))
        carol = UA(self.server, "carol", "192.0.2.22")
        for algorithm in ("SHA-256", "MD5"):
            response = self.publishAs(carol, "carol", "carol's", algorithm)
            self.assertEqual(response.code, 200)

    def test_wrongPasswordAndUnknownUserAlike(self) -> None:
        """A wrong password and an unknown user get the same 401, never a 2xx.

        RFC 7616 section 3.3 (stale): "If stale is false, or anything other
        than true, or the stale parameter is not present, the username
        and/or password are invalid, and new values MUST be obtained." The
        two cases are not told apart (no enumeration of users).
        """
        wrong = self.publishAs(self.bob, "bob", "not bob's password")
        nobody = self.publishAs(
            UA(self.server, "nobody", "192.0.2.23"), "nobody", "whatever"
        )
        for response in (wrong, nobody):
            self.assertEqual(response.code, 401)
            self.assertEqual(
                [sorted(c) for c in challenges(response)],
                [["algorithm", "nonce", "qop", "realm"]] * 2,
            )
        self.assertEqual(wrong.phrase, nobody.phrase)

    def test_staleNonce(self) -> None:
        """The right response to an expired nonce: 401 with stale=true, then 200.

        RFC 7616 section 3.3: "If stale is true, the client may wish to
        simply retry the request with a new encrypted response, without
        re-prompting the user for a new username and password."
        """
        challenged = self.publish(self.bob)
        self.server.advance(self.server.config.nonceLifetime + 1)
        value = authorization(
            challenged, "bob", "bob's password", "PUBLISH", self.bob.aor
        )
        stale = self.publish(self.bob, value)
        self.assertEqual(stale.code, 401)
        self.assertEqual([c.get("stale") for c in challenges(stale)], ["true"] * 2)
        retry = authorization(stale, "bob", "bob's password", "PUBLISH", self.bob.aor)
        self.assertEqual(self.publish(self.bob, retry).code, 200)

    def test_staleWithWrongPassword(self) -> None:
        """An expired nonce with a wrong response is not stale: the password is."""
        challenged = self.publish(self.bob)
        self.server.advance(self.server.config.nonceLifetime + 1)
        value = authorization(challenged, "bob", "wrong", "PUBLISH", self.bob.aor)
        response = self.publish(self.bob, value)
        self.assertEqual(response.code, 401)
        self.assertNotIn("stale", challenges(response)[0])

    def test_forgedNonce(self) -> None:
        """A nonce the server did not issue: a fresh challenge, not stale."""
        challenged = self.publish(self.bob)
        value = authorization(
            challenged, "bob", "bob's password", "PUBLISH", self.bob.aor
        )
        nonce = challenges(challenged)[0]["nonce"]
        forged = nonce[:-4] + ("AAAA" if not nonce.endswith("AAAA") else "BBBB")
        response = self.publish(self.bob, value.replace(nonce, forged))
        self.assertEqual(response.code, 401)
        self.assertNotIn("stale", challenges(response)[0])
        self.assertEqual(self.server.stack.authenticator.stats["refused"], 1)  # type: ignore[union-attr]

    def test_replayedCount(self) -> None:
        """A nonce count that does not grow is a replay; a growing one reuses the nonce.

        RFC 7616 section 3.4: "if the same nc value is seen twice, then the
        request is a replay."
        """
        challenged = self.publish(self.bob)

        def answer(nc: int) -> str:
            return authorization(
                challenged, "bob", "bob's password", "PUBLISH", self.bob.aor, nc=nc
            )

        self.assertEqual(self.publish(self.bob, answer(1)).code, 200)
        replayed = self.publish(self.bob, answer(1))
        self.assertEqual(replayed.code, 401)
        self.assertEqual(challenges(replayed)[0].get("stale"), "true")
        self.assertEqual(self.publish(self.bob, answer(2)).code, 200)
        self.assertEqual(self.publish(self.bob, answer(5)).code, 200)
        self.assertEqual(self.publish(self.bob, answer(4)).code, 401)
        self.assertEqual(self.server.stack.authenticator.stats["replayed"], 2)  # type: ignore[union-attr]

    def test_retransmissionNotAReplay(self) -> None:
        """A retransmission is absorbed by its transaction: the same 200 again."""
        challenged = self.publish(self.bob)
        value = authorization(
            challenged, "bob", "bob's password", "PUBLISH", self.bob.aor
        )
        data = self.bob.request(
            "PUBLISH",
            self.bob.aor,
            [
                ("Event", "presence"),
                ("Content-Type", "application/pidf+xml"),
                ("Authorization", value),
            ],
            pidf(),
        )
        self.bob.send(data)
        self.bob.send(data)
        received = self.bob.received()
        self.assertEqual(
            [m.code for m in received if isinstance(m, SIPResponse)], [200, 200]
        )

    def test_nonceOfAnotherServer(self) -> None:
        """A server with the same nonce_secret accepts the other's nonce; no other."""
        twin = self.makeServer()
        stranger = self.makeServer(nonceSecret="another secret, sixteen+ chars")
        challenged = self.publish(self.bob)
        value = authorization(
            challenged, "bob", "bob's password", "PUBLISH", self.bob.aor
        )
        self.assertEqual(self.publish(UA(twin, "bob"), value).code, 200)
        refused = self.publish(UA(stranger, "bob"), value)
        self.assertEqual(refused.code, 401)
        self.assertNotIn("stale", challenges(refused)[0])

    def test_randomSecretByDefault(self) -> None:
        """Without nonce_secret, two servers do not accept each other's nonces."""
        one = self.makeServer(nonceSecret=None)
        two = self.makeServer(nonceSecret=None)
        challenged = UA(one, "bob").publish(pidf())
        value = authorization(
            challenged, "bob", "bob's password", "PUBLISH", self.bob.aor
        )
        self.assertEqual(self.publish(UA(two, "bob"), value).code, 401)

    def test_keptValuesBounded(self) -> None:
        """Identities and H(A2) are kept per authenticator, never more than its limit.

        Whatever is kept, each request is still verified: alice's and bob's
        credentials work in turn, bob's password does not work for alice.
        """
        authenticator = self.server.stack.authenticator
        assert authenticator is not None
        authenticator.memoryLimit = 1
        for _ in range(2):
            self.assertEqual(
                self.publishAs(self.alice, "alice", "alice's password").code, 200
            )
            self.assertEqual(
                self.publishAs(self.bob, "bob", "bob's password").code, 200
            )
        self.assertEqual(
            self.publishAs(self.alice, "alice", "bob's password").code, 401
        )
        self.assertLessEqual(len(authenticator._identities), 1)
        self.assertLessEqual(len(authenticator._ha2s), 1)

    def test_uriMustBeRequestURI(self) -> None:
        """RFC 7616 section 3.4: a digest uri that is not the Request-URI gets 400.

        "The authenticating server MUST assure that the resource designated
        by the "uri" parameter is the same as the resource specified in the
        Request-Line; if they are not, the server SHOULD return a 400 Bad
        Request error."
        """
        challenged = self.publish(self.bob)
        value = authorization(
            challenged, "bob", "bob's password", "PUBLISH", "sip:alice@example.com"
        )
        self.assertEqual(self.publish(self.bob, value).code, 400)

    def test_uriEquivalent(self) -> None:
        """A uri equal to the Request-URI by RFC 3261 19.1.4 is the same resource."""
        challenged = self.publish(self.bob)
        value = authorization(
            challenged, "bob", "bob's password", "PUBLISH", "sip:bob@EXAMPLE.COM"
        )
        self.assertEqual(self.publish(self.bob, value).code, 200)

    def test_otherRealmIgnored(self) -> None:
        """Credentials for another realm are someone else's: a fresh challenge."""
        challenged = self.publish(self.bob)
        value = authorization(
            challenged, "bob", "bob's password", "PUBLISH", self.bob.aor
        ).replace('realm="example.com"', 'realm="example.org"')
        self.assertEqual(self.publish(self.bob, value).code, 401)

    def test_inDialogSubscribe(self) -> None:
        """A SUBSCRIBE in a dialog is challenged too, and passes with credentials."""
        challenged = self.alice.subscribe("sip:bob@example.com")
        value = authorization(
            challenged, "alice", "alice's password", "SUBSCRIBE", "sip:bob@example.com"
        )
        response = self.alice.subscribe(
            "sip:bob@example.com", extra=[("Authorization", value)]
        )
        self.assertEqual(response.code, 200)
        self.alice.notifies()
        self.assertEqual(self.alice.subscribe(refresh=True).code, 401)
        again = authorization(
            challenged,
            "alice",
            "alice's password",
            "SUBSCRIBE",
            "sip:bob@example.com",
            nc=2,
        )
        response = self.alice.subscribe(refresh=True, extra=[("Authorization", again)])
        self.assertEqual(response.code, 200)

    @settings(max_examples=200)
    @given(
        st.one_of(
            st.text(alphabet=st.characters(blacklist_characters="\r\n\x00")),
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
                            "opaque",
                        ]
                    ),
                    st.one_of(
                        st.text(
                            alphabet=st.characters(blacklist_characters="\r\n\x00"),
                            max_size=50,
                        ),
                        st.sampled_from(
                            [
                                '"bob"',
                                '"example.com"',
                                "auth",
                                "00000001",
                                '"sip:bob@example.com"',
                                "SHA-256",
                                "MD5",
                                '"x"',
                            ]
                        ),
                    ),
                ),
                max_size=12,
            ).map(lambda ps: "Digest " + ", ".join(f"{k}={v}" for k, v in ps)),
        )
    )
    def test_garbageAuthorization(self, value: str) -> None:
        """Whatever an Authorization header holds, the answer is 400 or 401."""
        response = self.publish(self.bob, value.strip() or "x")
        self.assertIn(response.code, (400, 401), value)

    @settings(max_examples=200)
    @given(
        st.lists(
            st.tuples(
                st.integers(0, 400),
                st.sampled_from(["insert", "replace", "delete"]),
                st.sampled_from(list('"\\ \t,=xA0é\x1f\x7f')),
            ),
            min_size=1,
            max_size=3,
        )
    )
    def test_mutatedAuthorization(self, edits: list[tuple[int, str, str]]) -> None:
        """A genuine answer with a character or three changed: never a 500.

        Most go through the fast parser of the common shape, or just miss
        it: 200 if the change left the answer right (white space, the case of
        a name), else 400 or 401.
        """
        challenged = self.publish(self.bob)
        value = authorization(
            challenged, "bob", "bob's password", "PUBLISH", self.bob.aor
        )
        for position, edit, character in edits:
            position %= len(value) + 1
            end = position if edit == "insert" else position + 1
            value = (
                value[:position] + ("" if edit == "delete" else character) + value[end:]
            )
        response = self.publish(self.bob, value.strip() or "x")
        self.assertIn(response.code, (200, 400, 401), value)


@implementer(ICredentialStore)
class WaitingStore:
    """Credentials that come later: each read waits for a Deferred fired by hand."""

    def __init__(self, backend: MemoryCredentialStore) -> None:
        """Read ``backend`` once each Deferred in `waiting` fires."""
        self.backend = backend
        self.waiting: list[Deferred[None]] = []

    async def credentials(self, username: str, domain: str) -> Credentials | None:
        """Wait, then read."""
        d: Deferred[None] = Deferred()
        self.waiting.append(d)
        await d
        return await self.backend.credentials(username, domain)


class WaitingCredentialsTests(AuthTestCase):
    """A credential store that does not answer at once (a database read).

    The authenticator verifies at once when the store answers at once, and
    otherwise goes on when the answer comes, with the same outcomes.
    """

    def setUp(self) -> None:
        """Put a waiting store in front of the users."""
        super().setUp()
        authenticator = self.server.stack.authenticator
        assert authenticator is not None
        backend = authenticator.credentials
        assert isinstance(backend, MemoryCredentialStore)
        self.store = WaitingStore(backend)
        authenticator.credentials = self.store

    def answered(self, password: str, fire: Callable[[Deferred[None]], None]) -> int:
        """The status of bob's PUBLISH once the store's read is fired."""
        challenged = self.publish(self.bob)
        value = authorization(challenged, "bob", password, "PUBLISH", self.bob.aor)
        extra = [("Authorization", value)]
        self.bob.send(
            self.bob.request(
                "PUBLISH",
                self.bob.aor,
                [
                    ("Event", "presence"),
                    ("Content-Type", "application/pidf+xml"),
                    *extra,
                ],
                pidf(user="bob"),
            )
        )
        self.assertEqual(self.bob.received(), [])
        [d] = self.store.waiting
        self.store.waiting.clear()
        fire(d)
        [response] = self.bob.received()
        assert isinstance(response, SIPResponse)
        return response.code

    def test_rightPassword(self) -> None:
        """The answer comes: 200."""
        self.assertEqual(
            self.answered("bob's password", lambda d: d.callback(None)), 200
        )

    def test_wrongPassword(self) -> None:
        """The answer comes, the response is wrong: 401."""
        self.assertEqual(self.answered("guess", lambda d: d.callback(None)), 401)

    def test_storeFails(self) -> None:
        """The store fails: 503, as any storage error."""
        self.assertEqual(
            self.answered("bob's password", lambda d: d.errback(StorageError("down"))),
            503,
        )


class CountingStore(MemoryCredentialStore):
    """A memory store counting the reads that go through a coroutine."""

    def __init__(self) -> None:
        """No read yet."""
        super().__init__()
        self.reads = 0

    async def credentials(self, username: str, domain: str) -> Credentials | None:
        """Count, then read."""
        self.reads += 1
        return await super().credentials(username, domain)


class ImmediateCredentialsTests(AuthTestCase):
    """A store that can answer at once (``peek``) is asked that way.

    What the authenticator keeps to go faster (the HA1 of a clear password,
    the store's answer read without a coroutine) never lets a changed
    password or a removed user through longer than the store itself does.
    """

    def setUp(self) -> None:
        """Put a counting memory store, then a few seconds' cache, in front."""
        super().setUp()
        authenticator = self.server.stack.authenticator
        assert authenticator is not None
        self.authenticator = authenticator
        backend = authenticator.credentials
        assert isinstance(backend, MemoryCredentialStore)
        self.backend = CountingStore()
        for row in backend.all():
            self.backend.put(row)
        authenticator.credentials = self.backend

    def test_peekedNotRead(self) -> None:
        """A store with ``peek`` is never read through its coroutine."""
        self.assertEqual(self.publishAs(self.bob, "bob", "bob's password").code, 200)
        self.assertEqual(self.publishAs(self.bob, "bob", "guess").code, 401)
        self.assertEqual(self.backend.reads, 0)

    def test_clearPasswordChanged(self) -> None:
        """A row holding only a clear password: its HA1 follows the row.

        RFC 7616 section 3.4.1: ``A1 = unq(username) ":" unq(realm) ":"
        passwd``; the HA1 worked out from it is kept per row read, so a
        new password is checked against as soon as the store gives it.
        """
        self.backend.put(Credentials("bob", "example.com", password="first"))
        self.assertEqual(self.publishAs(self.bob, "bob", "first").code, 200)
        self.assertEqual(self.publishAs(self.bob, "bob", "first", "MD5").code, 200)
        self.backend.put(Credentials("bob", "example.com", password="second"))
        self.assertEqual(self.publishAs(self.bob, "bob", "first").code, 401)
        self.assertEqual(self.publishAs(self.bob, "bob", "second").code, 200)
        self.backend.remove("bob", "example.com")
        self.assertEqual(self.publishAs(self.bob, "bob", "second").code, 401)

    def test_cacheLetsChangesThroughWithin5Seconds(self) -> None:
        """Behind the cache, a changed password counts within CREDENTIALS_TTL (< 5 s).

        The same nonce is used throughout, with a growing nonce count: what
        the authenticator keeps per client does not outlive the cache.
        """
        self.assertLess(CREDENTIALS_TTL, 5)
        cache = CachingCredentialStore(self.backend, self.server.reactor)
        self.authenticator.credentials = cache
        challenged = self.publish(self.bob)
        nc = iter(range(1, 100))

        def publishWith(password: str) -> int:
            value = authorization(
                challenged, "bob", password, "PUBLISH", self.bob.aor, nc=next(nc)
            )
            return self.publish(self.bob, value).code

        self.assertEqual(publishWith("bob's password"), 200)
        self.backend.put(Credentials("bob", "example.com", password="new"))
        self.server.reactor.advance(CREDENTIALS_TTL - 0.5)
        self.assertEqual(publishWith("bob's password"), 200)
        self.server.reactor.advance(0.5)
        self.assertEqual(publishWith("bob's password"), 401)
        challenged = self.publish(self.bob)
        nc = iter(range(1, 100))
        self.assertEqual(publishWith("new"), 200)
        self.backend.remove("bob", "example.com")
        self.server.reactor.advance(CREDENTIALS_TTL)
        self.assertEqual(publishWith("new"), 401)
        self.assertEqual(self.backend.reads, 3)


class IdentityTests(AuthTestCase):
    """The authenticated user is the identity."""

    def test_publishForAnother(self) -> None:
        """Bob's credentials on a PUBLISH for alice: 403, and nothing stored."""
        response = self.publishAs(
            self.bob, "bob", "bob's password", presentity="sip:alice@example.com"
        )
        self.assertEqual(response.code, 403)
        self.assertEqual(
            self.successResultOf(
                self.server.store.publications("alice@example.com", "presence")
            ),
            [],
        )

    def test_registerForAnother(self) -> None:
        """Bob's credentials on a REGISTER of alice: 403."""

        def register(authorization: str | None = None) -> SIPResponse:
            headers = [("Authorization", authorization)] if authorization else []
            self.bob.send(
                self.bob.request(
                    "REGISTER", "sip:example.com", headers, to="<sip:alice@example.com>"
                )
            )
            return self.bob.response()

        challenged = register()
        self.assertEqual(challenged.code, 401)
        self.assertEqual(challenges(challenged)[0]["realm"], "example.com")
        value = authorization(
            challenged, "bob", "bob's password", "REGISTER", "sip:example.com"
        )
        self.assertEqual(register(value).code, 403)

    def test_subscribeWatcherIsUser(self) -> None:
        """Authenticated as bob with From alice: the watcher is bob."""
        challenged = self.alice.subscribe("sip:carol@example.com")
        value = authorization(
            challenged, "bob", "bob's password", "SUBSCRIBE", "sip:carol@example.com"
        )
        response = self.alice.subscribe(
            "sip:carol@example.com", extra=[("Authorization", value)]
        )
        self.assertEqual(response.code, 200)
        [subscription] = self.successResultOf(
            self.server.store.subscriptions("sip:carol@example.com", "presence")
        )
        self.assertEqual(
            (subscription.watcherUsername, subscription.watcherURI),
            ("bob", "sip:bob@example.com"),
        )
        [row] = self.successResultOf(
            self.server.store.watchers("sip:carol@example.com", "presence")
        )
        self.assertEqual(
            (row.watcherUsername, row.watcherDomain), ("bob", "example.com")
        )

    def test_untrustedAssertionIgnored(self) -> None:
        """RFC 3325: a P-Asserted-Identity from an untrusted peer is not believed.

        It is challenged like any request, and the identity is the user who
        answered.
        """
        pai = ("P-Asserted-Identity", "<sip:carol@example.com>")
        challenged = self.alice.subscribe("sip:bob@example.com", extra=[pai])
        self.assertEqual(challenged.code, 401)
        value = authorization(
            challenged, "alice", "alice's password", "SUBSCRIBE", "sip:bob@example.com"
        )
        response = self.alice.subscribe(
            "sip:bob@example.com", extra=[pai, ("Authorization", value)]
        )
        self.assertEqual(response.code, 200)
        [subscription] = self.successResultOf(
            self.server.store.subscriptions("sip:bob@example.com", "presence")
        )
        self.assertEqual(subscription.watcherUsername, "alice")


class TrustedPeerTests(AuthTestCase):
    """trusted_peers: not challenged; their P-Asserted-Identity is the identity."""

    serverSettings: ClassVar[dict[str, Any]] = {
        "trustedPeers": ("10.0.0.0/8", "127.0.0.1")
    }

    def setUp(self) -> None:
        """A proxy at 10.1.2.3, trusted; alice and bob outside."""
        super().setUp()
        self.proxy = Subscriber(self.server, "alice", "10.1.2.3", 5060)

    def test_notChallenged(self) -> None:
        """A trusted peer's PUBLISH is served without credentials."""
        self.assertEqual(self.proxy.publish(pidf(user="alice")).code, 200)
        self.assertEqual(self.alice.publish(pidf(user="alice")).code, 401)

    def test_assertedIdentity(self) -> None:
        """RFC 3325 section 9.1: the asserted identity is the watcher.

        "The P-Asserted-Identity header field is used among trusted SIP
        entities (typically intermediaries) to carry the identity of the
        user sending a SIP message as it was verified by authentication."
        """
        pai = ("P-Asserted-Identity", '"Bob" <sip:bob@example.com>, <tel:+15551234>')
        response = self.proxy.subscribe("sip:carol@example.com", extra=[pai])
        self.assertEqual(response.code, 200)
        [subscription] = self.successResultOf(
            self.server.store.subscriptions("sip:carol@example.com", "presence")
        )
        self.assertEqual(
            (subscription.watcherUsername, subscription.watcherDisplayName),
            ("bob", "Bob"),
        )

    def test_assertedPublishForAnother(self) -> None:
        """An asserted identity publishes only its own presentity."""
        pai = ("P-Asserted-Identity", "<sip:bob@example.com>")
        self.assertEqual(self.proxy.publish(pidf(), extra=[pai]).code, 403)
        response = self.proxy.publish(
            pidf(), presentity="sip:bob@example.com", extra=[pai]
        )
        self.assertEqual(response.code, 200)

    def test_withoutAssertionFrom(self) -> None:
        """A trusted peer that asserts no identity is identified by its From."""
        self.assertEqual(self.proxy.subscribe("sip:carol@example.com").code, 200)
        [subscription] = self.successResultOf(
            self.server.store.subscriptions("sip:carol@example.com", "presence")
        )
        self.assertEqual(subscription.watcherUsername, "alice")
        response = self.proxy.publish(pidf(), presentity="sip:bob@example.com")
        self.assertEqual(response.code, 403)

    def test_malformedAssertion(self) -> None:
        """A trusted peer's malformed P-Asserted-Identity gets 400."""
        pai = ("P-Asserted-Identity", "<sip:bob@example.com")
        self.assertEqual(self.proxy.subscribe(extra=[pai]).code, 400)

    def test_withoutAuthentication(self) -> None:
        """With authentication off, trusted peers still assert; others are not."""
        server = Server(trustedPeers=("10.0.0.0/8",))
        self.addCleanup(server.close)
        proxy = Subscriber(server, "alice", "10.9.9.9")
        pai = ("P-Asserted-Identity", "<sip:bob@example.com>")
        self.assertEqual(
            proxy.subscribe("sip:carol@example.com", extra=[pai]).code, 200
        )
        outsider = Subscriber(server, "alice", "192.0.2.50")
        self.assertEqual(
            outsider.subscribe("sip:dave@example.com", extra=[pai]).code, 200
        )
        watchers = {
            s.presentity: s.watcherUsername
            for p in ("sip:carol@example.com", "sip:dave@example.com")
            for s in self.successResultOf(server.store.subscriptions(p, "presence"))
        }
        self.assertEqual(
            watchers,
            {"sip:carol@example.com": "bob", "sip:dave@example.com": "alice"},
        )
