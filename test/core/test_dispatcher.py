"""Tests for presence.core.dispatcher: checks, routing and the error funnel."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from presence.auth.identity import Identity
from presence.core.dispatcher import Dispatcher, checkRequest
from presence.packages.dialog import DialogPackage, SharedLineDialogPackage
from presence.packages.interfaces import PackageRegistry
from presence.packages.mwi import MessageSummaryPackage
from presence.packages.presence import PresencePackage
from presence.sip.errors import BadRequest, Forbidden, NotFound
from presence.sip.message import SIPRequest, SIPResponse, responseTo
from presence.sip.parser import parseDatagram
from presence.sip.transport import Peer
from presence.storage.errors import StorageError


class FakeTransaction:
    """A server transaction that records the responses it is given."""

    def __init__(self, request: SIPRequest) -> None:
        """Open for ``request``."""
        self.request = request
        self.peer = Peer("UDP", "192.0.2.1", 5060)
        self.state = "trying"
        self.responses: list[SIPResponse] = []

    def response(
        self,
        code: int,
        phrase: str = "",
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> SIPResponse:
        """Build a response with a fixed To tag."""
        return responseTo(self.request, code, phrase, headers or (), body, "t1")

    def respond(self, response: SIPResponse) -> None:
        """Record a response."""
        self.responses.append(response)
        if response.code >= 200:
            self.state = "completed"


def request(method: str = "OPTIONS", **overrides: Any) -> SIPRequest:
    """Build a well-formed request, with headers replaced or removed (None)."""
    headers = {
        "Via": "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1",
        "Max-Forwards": "70",
        "To": "<sip:bob@example.com>",
        "From": "<sip:alice@example.com>;tag=a1",
        "Call-ID": "c1@192.0.2.1",
        "CSeq": f"1 {method}",
    }
    uri = overrides.pop("uri", "sip:bob@example.com")
    body = overrides.pop("body", b"")
    for name, value in overrides.items():
        name = name.replace("_", "-")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    lines = [f"{method} {uri} SIP/2.0"] + [f"{k}: {v}" for k, v in headers.items()]
    data = ("\r\n".join(lines) + f"\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    message = parseDatagram(data + body)
    assert isinstance(message, SIPRequest)
    return message


def dispatch(dispatcher: Dispatcher, message: SIPRequest) -> SIPResponse:
    """Hand a request to the dispatcher and return its one response."""
    transaction = FakeTransaction(message)
    dispatcher.requestReceived(message, transaction)  # type: ignore[arg-type]
    assert len(transaction.responses) == 1, transaction.responses
    return transaction.responses[0]


class CheckRequestTests(SynchronousTestCase):
    """RFC 3261 section 8.2 checks made before routing."""

    def test_missingHeaderNamed(self) -> None:
        """RFC 3261 8.1.1.

        A request without a mandatory header is answered 400 with a reason
        naming the header.
        """
        for name in ["Via", "To", "From", "Call-ID", "CSeq", "Max-Forwards"]:
            response = dispatch(Dispatcher(), request("OPTIONS", **{name: None}))
            self.assertEqual(response.code, 400, name)
            self.assertIn(name, response.phrase)

    def test_cseqMethodMismatch(self) -> None:
        """RFC 3261 8.2: a CSeq method differing from the request's gets 400."""
        response = dispatch(Dispatcher(), request(CSeq="1 INVITE"))
        self.assertEqual(response.code, 400)
        self.assertIn("CSeq", response.phrase)

    def test_maxForwardsZero(self) -> None:
        """RFC 3261 16.3: Max-Forwards 0 is answered 483 Too Many Hops."""
        response = dispatch(Dispatcher(), request("SUBSCRIBE", Max_Forwards="0"))
        self.assertEqual(response.code, 483)

    def test_maxForwardsZeroOptions(self) -> None:
        """RFC 3261 16.3: an OPTIONS with Max-Forwards 0 is answered itself."""
        response = dispatch(Dispatcher(), request("OPTIONS", Max_Forwards="0"))
        self.assertEqual(response.code, 200)

    def test_maxForwardsTooLarge(self) -> None:
        """RFC 3261 20.22: a Max-Forwards over 255 is malformed: 400."""
        response = dispatch(Dispatcher(), request(Max_Forwards="256"))
        self.assertEqual(response.code, 400)

    def test_unknownScheme(self) -> None:
        """RFC 3261 8.2.2.1: a Request-URI of an unknown scheme gets 416."""
        for uri in ["tel:+15551234", "foo:bar@example.com"]:
            response = dispatch(Dispatcher(), request(uri=uri))
            self.assertEqual(response.code, 416, uri)

    def test_malformedRequestURI(self) -> None:
        """A sip Request-URI that does not parse gets 400."""
        response = dispatch(Dispatcher(), request(uri="sip:bob@exa^mple.com"))
        self.assertEqual(response.code, 400)

    def test_requireUnsupported(self) -> None:
        """RFC 3261 8.2.2.3: an unsupported Require gets 420 with Unsupported."""
        response = dispatch(Dispatcher(), request(Require="foo, 100rel"))
        self.assertEqual(response.code, 420)
        self.assertEqual(response.header("unsupported"), "foo, 100rel")

    def test_requireSupported(self) -> None:
        """A Require naming only supported options passes."""
        dispatcher = Dispatcher()
        dispatcher.supported.append("eventlist")
        response = dispatch(dispatcher, request(Require="eventlist"))
        self.assertEqual(response.code, 200)

    def test_bodyTooLarge(self) -> None:
        """A body larger than the configured limit is answered 513."""
        dispatcher = Dispatcher(maxBodySize=10)
        response = dispatch(
            dispatcher, request(body=b"x" * 11, Content_Type="text/plain")
        )
        self.assertEqual(response.code, 513)

    def test_checkPasses(self) -> None:
        """A well-formed request passes every check."""
        checkRequest(request(), 1000)


class RoutingTests(SynchronousTestCase):
    """Routing by method, and OPTIONS."""

    def test_options(self) -> None:
        """RFC 3261 11.2: OPTIONS gets 200 with Allow, Accept and Supported."""
        dispatcher = Dispatcher(packages=PackageRegistry([PresencePackage()]))
        response = dispatch(dispatcher, request())
        self.assertEqual(response.code, 200)
        self.assertEqual(response.header("allow"), "OPTIONS, ACK, CANCEL")
        self.assertEqual(response.header("accept"), "application/pidf+xml")
        self.assertTrue(response.hasHeader("supported"))
        self.assertIsNotNone(response.toAddr.tag)

    def test_optionsAllowEvents(self) -> None:
        """OPTIONS lists the registered event packages in Allow-Events."""
        packages = PackageRegistry([PresencePackage(), DialogPackage()])
        response = dispatch(Dispatcher(packages=packages), request())
        self.assertEqual(response.header("allow-events"), "presence, dialog")

    def test_acceptAndAllowEventsFromPackages(self) -> None:
        """Accept and Allow-Events are worked out from the packages, once each.

        A package registered after the dispatcher is built is advertised too.
        """
        packages = PackageRegistry(
            [PresencePackage(), DialogPackage(), SharedLineDialogPackage()]
        )
        dispatcher = Dispatcher(packages=packages)
        packages.register(MessageSummaryPackage())
        response = dispatch(dispatcher, request())
        self.assertEqual(
            response.header("accept"),
            "application/pidf+xml, application/dialog-info+xml,"
            " application/simple-message-summary",
        )
        self.assertEqual(
            response.header("allow-events"), "presence, dialog, message-summary"
        )

    def test_optionsWithoutPackages(self) -> None:
        """Without packages OPTIONS has an empty Accept and no Allow-Events."""
        response = dispatch(Dispatcher(), request())
        self.assertEqual(response.header("accept"), "")
        self.assertFalse(response.hasHeader("allow-events"))

    def test_unimplementedMethod(self) -> None:
        """RFC 3261 8.2.1.

        A method the server does not implement gets 405 with Allow.
        """
        for method in ["INVITE", "MESSAGE", "NEWMETHOD"]:
            response = dispatch(Dispatcher(), request(method))
            self.assertEqual(response.code, 405)
            self.assertIn("OPTIONS", response.header("allow") or "")

    def test_registeredHandler(self) -> None:
        """A handler given to the dispatcher answers its method and shows in Allow."""

        async def handler(req: SIPRequest, transaction: Any, identity: Any) -> None:
            transaction.respond(transaction.response(202))

        dispatcher = Dispatcher({"PUBLISH": handler})
        self.assertEqual(dispatch(dispatcher, request("PUBLISH")).code, 202)
        self.assertIn("PUBLISH", dispatcher.allow)


class ErrorFunnelTests(SynchronousTestCase):
    """Every failure of a handler becomes a response."""

    def answer(self, error: Exception) -> SIPResponse:
        """The response to a PUBLISH whose handler raises ``error``."""

        async def handler(req: SIPRequest, transaction: Any, identity: Any) -> None:
            raise error

        return dispatch(Dispatcher({"PUBLISH": handler}), request("PUBLISH"))

    def test_sipError(self) -> None:
        """A SIPError becomes its own status, reason and headers."""
        response = self.answer(Forbidden("not you"))
        self.assertEqual((response.code, response.phrase), (403, "not you"))

    def test_badRequestReasonOneLine(self) -> None:
        """A reason with line breaks is flattened into one reason phrase."""
        response = self.answer(BadRequest("two\r\nlines"))
        self.assertEqual(response.phrase, "two  lines")

    def test_storageUnavailable(self) -> None:
        """A storage outage becomes 503 with Retry-After."""
        response = self.answer(StorageError("database unreachable"))
        self.assertEqual(response.code, 503)
        self.assertEqual(response.header("retry-after"), "5")

    def test_unexpectedError(self) -> None:
        """Any other error is logged as a bug and answered 500."""
        response = self.answer(ZeroDivisionError())
        self.assertEqual(response.code, 500)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_notReady(self) -> None:
        """While the server is not ready every request gets 503."""
        response = dispatch(Dispatcher(ready=lambda: False), request())
        self.assertEqual(response.code, 503)
        self.assertTrue(response.hasHeader("retry-after"))

    def test_notReadyBeforeOtherChecks(self) -> None:
        """Readiness is the first request check; the others run in order after it.

        The first check that raises answers the request, and the handler is not
        called.
        """
        ran: list[str] = []

        def refuse(req: SIPRequest, transaction: Any) -> None:
            ran.append("refuse")
            raise NotFound("refused by a check")

        def never(req: SIPRequest, transaction: Any) -> None:
            ran.append("never")

        async def handler(req: SIPRequest, transaction: Any, identity: Any) -> None:
            ran.append("handler")

        notReady = Dispatcher(
            {"PUBLISH": handler}, ready=lambda: False, checks=[refuse]
        )
        self.assertEqual(dispatch(notReady, request("PUBLISH")).code, 503)
        self.assertEqual(ran, [])
        ready = Dispatcher({"PUBLISH": handler}, checks=[refuse, never])
        response = dispatch(ready, request("PUBLISH"))
        self.assertEqual((response.code, response.phrase), (404, "refused by a check"))
        self.assertEqual(ran, ["refuse"])

    def test_checksPass(self) -> None:
        """When every check passes the handler answers."""
        seen: list[str] = []

        async def handler(req: SIPRequest, transaction: Any, identity: Any) -> None:
            transaction.respond(transaction.response(202))

        dispatcher = Dispatcher(
            {"PUBLISH": handler},
            checks=[lambda req, transaction: seen.append(req.method)],
        )
        self.assertEqual(dispatch(dispatcher, request("PUBLISH")).code, 202)
        self.assertEqual(seen, ["PUBLISH"])


class RequestGateTests(SynchronousTestCase):
    """Checks see the request and transaction; their identity reaches the handler."""

    def test_checkSeesTransaction(self) -> None:
        """A check is given the transaction, and through it the peer."""
        peers: list[Any] = []

        async def handler(req: SIPRequest, transaction: Any, identity: Any) -> None:
            transaction.respond(transaction.response(200))

        def check(req: SIPRequest, transaction: Any) -> None:
            peers.append(transaction.peer)

        dispatch(Dispatcher({"PUBLISH": handler}, checks=[check]), request("PUBLISH"))
        self.assertEqual(peers, [Peer("UDP", "192.0.2.1", 5060)])

    def test_identityToHandler(self) -> None:
        """The identity a check returns is the handler's third argument."""
        bob = Identity("bob", "example.com")
        seen: list[Identity | None] = []

        async def handler(req: SIPRequest, transaction: Any, identity: Any) -> None:
            seen.append(identity)
            transaction.respond(transaction.response(200))

        dispatcher = Dispatcher({"PUBLISH": handler}, checks=[lambda r, t: bob])
        self.assertEqual(dispatch(dispatcher, request("PUBLISH")).code, 200)
        self.assertEqual(seen, [bob])
        dispatch(Dispatcher({"PUBLISH": handler}), request("PUBLISH"))
        self.assertEqual(seen, [bob, None])

    def test_awaitableCheck(self) -> None:
        """A check may answer later: the handler waits, then gets its identity."""
        bob = Identity("bob", "example.com")
        pending: Deferred[Identity | None] = Deferred()
        seen: list[Identity | None] = []

        async def later(req: SIPRequest, transaction: Any) -> Identity | None:
            return await pending

        async def handler(req: SIPRequest, transaction: Any, identity: Any) -> None:
            seen.append(identity)
            transaction.respond(transaction.response(200))

        message = request("PUBLISH")
        transaction = FakeTransaction(message)
        dispatcher = Dispatcher({"PUBLISH": handler}, checks=[later])
        dispatcher.requestReceived(message, transaction)  # type: ignore[arg-type]
        self.assertEqual((seen, transaction.responses), ([], []))
        pending.callback(bob)
        self.assertEqual(seen, [bob])
        self.assertEqual([r.code for r in transaction.responses], [200])

    def test_awaitableCheckRefuses(self) -> None:
        """A check that refuses later is answered by the funnel like any other."""

        async def refuse(req: SIPRequest, transaction: Any) -> None:
            raise Forbidden("not later either")

        async def handler(req: SIPRequest, transaction: Any, identity: Any) -> None:
            raise AssertionError("the handler must not run")

        response = dispatch(
            Dispatcher({"PUBLISH": handler}, checks=[refuse]), request("PUBLISH")
        )
        self.assertEqual((response.code, response.phrase), (403, "not later either"))

    def test_lastIdentityWins(self) -> None:
        """Checks run in order; a check that names nobody keeps the earlier identity."""
        alice = Identity("alice", "example.com")
        bob = Identity("bob", "example.com")
        seen: list[Identity | None] = []

        async def handler(req: SIPRequest, transaction: Any, identity: Any) -> None:
            seen.append(identity)
            transaction.respond(transaction.response(200))

        checks = [lambda r, t: alice, lambda r, t: None, lambda r, t: bob]
        dispatch(Dispatcher({"PUBLISH": handler}, checks=checks), request("PUBLISH"))
        dispatch(
            Dispatcher({"PUBLISH": handler}, checks=checks[:2]), request("PUBLISH")
        )
        self.assertEqual(seen, [bob, alice])
