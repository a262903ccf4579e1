"""The administration site over real HTTP: XML-RPC at /RPC2, metrics at /metrics."""

from __future__ import annotations

import xmlrpc.client
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent
from twisted.web.http_headers import Headers

from presence.testing import pidf
from test.support.records import carolSubscription
from test.support.sockets import SocketUA, startServerWithAdmin

BOB = "sip:bob@example.com"


class AdminTestCase(TestCase):
    """A server with its administration site on loopback ports."""

    timeout = 30

    async def setUp(self) -> None:  # type: ignore[override]  # trial awaits it
        """Start the server, admin site included."""
        started = await startServerWithAdmin(reactor)
        self.server, self.udpPort, _, adminPort, connections = started
        self.addCleanup(self.server.stopService)
        self.addCleanup(connections.whenClosed)
        self.base = f"http://127.0.0.1:{adminPort}"
        # Not persistent: each request's connection is closed after it.
        self.http = HTTPClient(Agent(reactor))

    async def ua(self, user: str) -> SocketUA:
        """A started user agent over UDP, closed and checked at cleanup."""
        agent = SocketUA(reactor, user, self.udpPort)
        await agent.start()
        self.addCleanup(lambda: self.assertEqual(agent.errors, []))
        self.addCleanup(agent.close)
        return agent

    async def post(self, body: bytes) -> bytes:
        """POST to /RPC2; the answer's bytes (always HTTP 200)."""
        response = await self.http.post(
            f"{self.base}/RPC2",
            data=body,
            headers=Headers({"Content-Type": ["text/xml"]}),
        )
        self.assertEqual(response.code, 200)
        content: bytes = await response.content()
        self.assertNotIn(b"Traceback", content)
        return content

    async def call(self, method: str, *args: Any) -> Any:
        """Call an XML-RPC method; its result, or raise its `Fault`."""
        content = await self.post(xmlrpc.client.dumps(args, method).encode())
        (result,), _ = xmlrpc.client.loads(content)
        return result

    async def fault(self, method: str, *args: Any) -> xmlrpc.client.Fault:
        """Call a method that must answer a fault; the fault."""
        try:
            result = await self.call(method, *args)
        except xmlrpc.client.Fault as fault:
            return fault
        self.fail(f"{method}{args} answered {result!r}, not a fault")

    async def metrics(self) -> dict[str, Any]:
        """GET /metrics, parsed: metric family name -> family."""
        response = await self.http.get(f"{self.base}/metrics")
        self.assertEqual(response.code, 200)
        self.assertTrue(
            response.headers.getRawHeaders("content-type")[0].startswith("text/plain")
        )
        text = (await response.content()).decode()
        return {family.name: family for family in text_string_to_metric_families(text)}


class ListingTests(AdminTestCase):
    """The listings over XML-RPC."""

    async def test_presentityListings(self) -> None:
        """A presentity's publications, subscriptions and watchers are listed."""
        bob = await self.ua("bob")
        alice = await self.ua("alice")
        published = await bob.publish(pidf("open"))
        self.assertEqual(published.code, 200)
        self.assertEqual((await alice.subscribe(BOB)).code, 200)
        await alice.notify()

        page = await self.call("pres_phtable_list")
        self.assertEqual(page["next"], "")
        [entry] = page["entries"]
        self.assertEqual(entry["presentity"], BOB)
        self.assertEqual(entry["event"], "presence")
        self.assertEqual(entry["etag"], published.header("sip-etag"))
        self.assertEqual(entry["content_type"], "application/pidf+xml")
        self.assertGreater(entry["expires"], reactor.seconds())
        for presentity in ["bob@example.com", BOB, "sip:bob@EXAMPLE.com"]:
            page = await self.call("pres_phtable_list", presentity)
            self.assertEqual(len(page["entries"]), 1, presentity)
        page = await self.call("pres_phtable_list", "sip:nobody@example.com")
        self.assertEqual(page, {"entries": [], "next": ""})

        page = await self.call("subs_phtable_list", BOB, "presence")
        [entry] = page["entries"]
        self.assertEqual(entry["presentity"], BOB)
        self.assertEqual(entry["watcher"], "sip:alice@example.com")
        self.assertEqual(entry["status"], "active")
        self.assertEqual(entry["transport"], "UDP")
        self.assertEqual(entry["socket"], f"udp:127.0.0.1:{alice.localPort}")
        self.assertEqual(entry["owner"], "")
        self.assertEqual(entry["callid"], alice.callId)
        self.assertTrue(entry["contact"].startswith("sip:alice@127.0.0.1"))
        named = await self.call("subs_phtable_list", {"presentity": BOB})
        self.assertEqual(named["entries"], page["entries"])

        page = await self.call("pres_watchers_list", BOB)
        [entry] = page["entries"]
        self.assertEqual(
            (entry["watcher"], entry["event"], entry["status"]),
            ("sip:alice@example.com", "presence", "active"),
        )

    async def test_pagingOverManySubscriptions(self) -> None:
        """2,500 subscriptions come in 3 pages of at most 1,000, each once."""
        store = self.server.stack.store
        for n in range(2500):
            await store.putSubscription(carolSubscription(n))
        seen: list[str] = []
        sizes = []
        cursor = ""
        while True:
            page = await self.call("subs_phtable_list", "", "", cursor, 1000)
            sizes.append(len(page["entries"]))
            seen.extend(entry["callid"] for entry in page["entries"])
            cursor = page["next"]
            if not cursor:
                break
        self.assertEqual(sizes, [1000, 1000, 500])
        self.assertEqual(seen, sorted(set(seen)))
        self.assertEqual(len(seen), 2500)
        # The limit defaults to the maximum, and is lowered to it.
        for limit in [None, 5000, "5000"]:
            args = ("", "", "") if limit is None else ("", "", "", limit)
            page = await self.call("subs_phtable_list", *args)
            self.assertEqual(len(page["entries"]), 1000)
        page = await self.call("subs_phtable_list", "sip:carol@example.com", "", "", 7)
        self.assertEqual(len(page["entries"]), 7)
        self.assertNotEqual(page["next"], "")


class FaultTests(AdminTestCase):
    """Mistakes get faults with a message, never a traceback."""

    async def test_unknownMethod(self) -> None:
        """An unknown method is Twisted's fault 8001."""
        fault = await self.fault("no_such_method")
        self.assertEqual(fault.faultCode, 8001)

    async def test_badArguments(self) -> None:
        """Bad arguments are fault 400, saying what is wrong."""
        cursor = (await self.call("pres_watchers_list", "", "", "", 1))["next"]
        for args, words in [
            (("a", "b", "c", 1, "e"), "at most 4 arguments"),
            (("", "", "", "many"), "limit must be an integer"),
            (("", "", "", 0), "at least 1"),
            (("", "", "not-a-cursor"), "bad cursor"),
            (("not a uri",), "bad presentity"),
            ((7,), "must be a string"),
            (({"presence": BOB},), "unknown argument"),
        ]:
            fault = await self.fault("subs_phtable_list", *args)
            self.assertEqual(fault.faultCode, 400, args)
            self.assertIn(words, fault.faultString, args)
        self.assertEqual(cursor, "")

    async def test_cursorOfAnotherListing(self) -> None:
        """A cursor is refused by a listing that did not make it."""
        for n in range(3):
            await self.server.stack.store.putSubscription(carolSubscription(n))
        cursor = (await self.call("subs_phtable_list", "", "", "", 1))["next"]
        self.assertNotEqual(cursor, "")
        fault = await self.fault("pres_watchers_list", "", "", cursor)
        self.assertEqual(fault.faultCode, 400)

    async def test_refreshWatchersFaults(self) -> None:
        """refreshWatchers: 404 for an empty URI, 400 for an empty event or type."""
        self.assertEqual(
            (await self.fault("refreshWatchers", "", "presence")).faultCode, 404
        )
        self.assertEqual((await self.fault("refreshWatchers", BOB, "")).faultCode, 400)
        fault = await self.fault("refreshWatchers", BOB, "presence", "x")
        self.assertEqual(fault.faultCode, 400)
        fault = await self.fault("refreshWatchers", BOB, "no-such-event", 0)
        self.assertEqual(fault.faultCode, 400)
        self.assertIn("unknown event package", fault.faultString)

    async def test_notXMLRPC(self) -> None:
        """A body that is not XML-RPC gets a fault, not a traceback."""
        content = await self.post(b"<methodCall><oops")
        with self.assertRaises(xmlrpc.client.Fault):
            xmlrpc.client.loads(content)

    async def test_hostileXML(self) -> None:
        """A call declaring a DTD (an entity expansion bomb) is refused: 400.

        And the site keeps answering.
        """
        bomb = (
            b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
            b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
            b"<methodCall><methodName>get_statistics</methodName>"
            b"<params><param><value><string>&lol2;</string></value></param>"
            b"</params></methodCall>"
        )
        content = await self.post(bomb)
        with self.assertRaises(xmlrpc.client.Fault) as caught:
            xmlrpc.client.loads(content)
        self.assertEqual(caught.exception.faultCode, 400)
        self.assertIn("DTD", caught.exception.faultString)
        self.assertIsInstance(await self.call("get_statistics", "xcap:"), dict)

    async def test_refreshWatchersBothNames(self) -> None:
        """refresh_watchers is OpenSIPS's spelling of refreshWatchers."""
        for name in ("refreshWatchers", "refresh_watchers"):
            result = await self.call(name, BOB, "presence", "1")
            self.assertEqual(result["subscriptions"], 0)


class RefreshWatchersTests(AdminTestCase):
    """refreshWatchers re-sends the stored state."""

    async def test_notifiesAgain(self) -> None:
        """Every type (an int or a numeric string) sends each watcher a NOTIFY."""
        bob = await self.ua("bob")
        alice = await self.ua("alice")
        await bob.publish(pidf("open"))
        await alice.subscribe(BOB)
        first = await alice.notify()
        kinds: list[int | str] = [0, "1", " 2 "]
        for kind in kinds:
            result = await self.call("refreshWatchers", BOB, "presence", kind)
            self.assertEqual(
                result,
                {
                    "presentity": BOB,
                    "event": "presence",
                    "type": int(kind),
                    "subscriptions": 1,
                    "changed": 0,
                },
            )
            again = await alice.notify()
            self.assertEqual(again.callId, first.callId)
            self.assertEqual(again.body, first.body)
        result = await self.call(
            "refreshWatchers", "sip:nobody@example.com", "presence"
        )
        self.assertEqual(result["subscriptions"], 0)


class StatisticsTests(AdminTestCase):
    """get_statistics and /metrics count known traffic."""

    async def test_afterThreePublishes(self) -> None:
        """3 PUBLISH: three 200s, three publications, three timings."""
        bob = await self.ua("bob")
        for n in range(3):
            self.assertEqual((await bob.publish(pidf("open", f"t{n}"))).code, 200)
        values = await self.call("get_statistics")
        self.assertEqual(values["requests:PUBLISH:200"], 3)
        self.assertEqual(values["handling:PUBLISH:count"], 3)
        self.assertEqual(values["publications:presence"], 3)
        self.assertEqual(values["xcap:fetches"], 0)
        self.assertEqual(values["database:serving"], 1)
        self.assertGreaterEqual(values["sip:received"], 3)
        group = await self.call("get_statistics", "requests:", "notify:sent")
        self.assertEqual(set(group), {"requests:PUBLISH:200", "notify:sent"})
        self.assertEqual(
            await self.call("get_statistics", ["requests:"]),
            {"requests:PUBLISH:200": 3},
        )

        families = await self.metrics()
        [sample] = families["presence_requests"].samples
        self.assertEqual(sample.name, "presence_requests_total")
        self.assertEqual(sample.labels, {"method": "PUBLISH", "code": "200"})
        self.assertEqual(sample.value, 3)
        handling = {
            (s.name, s.labels.get("le")): s.value
            for s in families["presence_request_handling_seconds"].samples
            if s.labels["method"] == "PUBLISH"
        }
        self.assertEqual(handling[("presence_request_handling_seconds_count", None)], 3)
        self.assertEqual(
            handling[("presence_request_handling_seconds_bucket", "+Inf")], 3
        )
        [publications] = families["presence_publications"].samples
        self.assertEqual(
            (publications.labels, publications.value), ({"event": "presence"}, 3)
        )
        self.assertEqual(families["presence_xcap_fetches"].samples[0].value, 0)
        self.assertEqual(families["presence_serving"].samples[0].value, 1)
        self.assertEqual(families["presence_notifies_sent"].samples[0].value, 0)

    async def test_openMetrics(self) -> None:
        """A scraper asking for OpenMetrics gets it."""
        response = await self.http.get(
            f"{self.base}/metrics",
            headers=Headers(
                {"Accept": ["application/openmetrics-text; version=1.0.0"]}
            ),
        )
        self.assertEqual(response.code, 200)
        [kind] = response.headers.getRawHeaders("content-type")
        self.assertTrue(kind.startswith("application/openmetrics-text"), kind)
        text = (await response.content()).decode()
        self.assertTrue(text.endswith("# EOF\n"))
        self.assertIn("# TYPE presence_requests counter", text)

    async def test_notifiesCounted(self) -> None:
        """A subscription's NOTIFY is counted sent and accepted; gauges follow."""
        bob = await self.ua("bob")
        alice = await self.ua("alice")
        await bob.publish(pidf("open"))
        await alice.subscribe(BOB)
        await alice.notify()
        await alice.ping()
        families = await self.metrics()
        value = {name: f.samples[0].value for name, f in families.items() if f.samples}
        self.assertEqual(value["presence_notifies_sent"], 1)
        self.assertEqual(value["presence_notifies_accepted"], 1)
        self.assertEqual(value["presence_notifies_outstanding"], 0)
        subscriptions = {
            s.labels["event"]: s.value
            for s in families["presence_subscriptions"].samples
        }
        self.assertEqual(subscriptions, {"presence": 1})
        codes = {
            (s.labels["method"], s.labels["code"]): s.value
            for s in families["presence_requests"].samples
        }
        self.assertEqual(
            codes,
            {("PUBLISH", "200"): 1, ("SUBSCRIBE", "200"): 1, ("OPTIONS", "200"): 1},
        )
