"""Time and memory of listing many subscriptions page by page, as the admin does.

    python bench/listing.py [--count 100000] [--limit 1000] [--store memory|sqlite|both]

For each store it fills ``count`` subscriptions, then walks
``subs_phtable_list`` from the first page to the last through the same code
the XML-RPC method runs (the store's keyset paging, the entries, the XML-RPC
encoding of each page), and reports the pages, the total and the slowest
page's time, and the peak of memory allocated while listing (tracemalloc), next
to the resident memory the rows themselves take. It needs the project installed (it
imports ``presence``); it runs on the reactor, the SQLite store's statements in
its thread pool.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import tracemalloc
import xmlrpc.client
from collections.abc import Sequence
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred

from presence.admin.xmlrpc import encodeCursor, subscriptionEntry
from presence.storage.interfaces import IPresenceStore
from presence.storage.memory import MemoryStore
from presence.storage.records import Batch, Subscription
from presence.tap import tuneGarbageCollector


def subscription(n: int) -> Subscription:
    """Watcher ``n``'s subscription to one of 1,000 presentities."""
    return Subscription(
        f"sip:user{n % 1000}@example.com",
        "presence",
        "",
        f"{n * 2654435761 % 2**32:08x}-{n}@192.0.2.2",
        f"tag{n}",
        f"from{n}",
        f"w{n}",
        "example.org",
        f"user{n % 1000}",
        "example.com",
        1,
        1,
        f"sip:w{n}@192.0.2.2:5060",
        "",
        4e9,
        socketInfo="udp:192.0.2.2:5060",
        localContact="sip:presence@192.0.2.1",
        watcherURI=f"sip:w{n}@example.org",
    )


async def walk(store: IPresenceStore, limit: int) -> dict[str, Any]:
    """List every subscription page by page, twice; what it cost.

    The garbage collector is tuned as the server tunes it at start
    (`presence.tap.tuneGarbageCollector`). The first walk is timed (the
    store's page, the entries and the XML-RPC encoding apart), the second
    traces the memory allocated meanwhile (tracemalloc slows everything
    down, so it is not timed).
    """
    tuneGarbageCollector()
    timings = await _walk(store, limit, traced=False)
    memory = await _walk(store, limit, traced=True)
    return {**timings, "peak MiB while listing": memory["peak MiB while listing"]}


async def _walk(store: IPresenceStore, limit: int, traced: bool) -> dict[str, Any]:
    pages, entries, slowest, encoded, slowestPage = 0, 0, 0.0, 0, 0
    inStore = inEntries = inXML = 0.0
    after = None
    if traced:
        tracemalloc.start()
        tracemalloc.reset_peak()
    baseline = tracemalloc.get_traced_memory()[0] if traced else 0
    started = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        page = await store.listSubscriptions(after=after, limit=limit)
        t1 = time.perf_counter()
        answer = {
            "entries": [subscriptionEntry(s) for s in page.entries],
            "next": encodeCursor("s", page.next),
        }
        t2 = time.perf_counter()
        encoded += len(xmlrpc.client.dumps((answer,), methodresponse=True))
        t3 = time.perf_counter()
        inStore += t1 - t0
        inEntries += t2 - t1
        inXML += t3 - t2
        if t3 - t0 > slowest:
            slowest, slowestPage = t3 - t0, pages
        pages += 1
        entries += len(page.entries)
        if page.next is None:
            break
        after = page.next
    total = time.perf_counter() - started
    result: dict[str, Any] = {
        "pages": pages,
        "entries": entries,
        "total s": round(total, 2),
        "store s": round(inStore, 2),
        "entries s": round(inEntries, 2),
        "XML-RPC encoding s": round(inXML, 2),
        "slowest page ms": round(slowest * 1000, 1),
        "slowest page": slowestPage,
        "XML MiB sent": round(encoded / 2**20, 1),
    }
    if traced:
        peak = tracemalloc.get_traced_memory()[1] - baseline
        tracemalloc.stop()
        result["peak MiB while listing"] = round(peak / 2**20, 1)
    return result


def _rss() -> int:
    """This process's resident memory, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def memoryStore(count: int, limit: int) -> dict[str, Any]:
    """The memory store (and the cache, which lists from it)."""
    before = _rss()
    store = MemoryStore()
    for n in range(count):
        await store.putSubscription(subscription(n))
    held = _rss() - before
    result = await walk(store, limit)
    result["store RSS MiB"] = round(held / 2**20, 1)
    return result


async def sqliteStore(reactor: Any, count: int, limit: int) -> dict[str, Any]:
    """SQLite, through adbapi's thread pool."""
    from presence.storage.sqlite import SQLiteStore

    directory = tempfile.mkdtemp(prefix="listing-")
    store = SQLiteStore(os.path.join(directory, "presence.sqlite"), reactor=reactor)
    await store.start()
    try:
        await store.ensureSchema(True)
        for start in range(0, count, 10_000):
            rows = [subscription(n) for n in range(start, min(count, start + 10_000))]
            await store.applyBatch(Batch(subscriptions=rows))
        return await walk(store, limit)
    finally:
        await store.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--store", choices=("memory", "sqlite", "both"), default="both")
    options = parser.parse_args(argv)

    async def measure(reactor: Any) -> None:
        if options.store in ("memory", "both"):
            print("memory:", await memoryStore(options.count, options.limit))
        if options.store in ("sqlite", "both"):
            print("sqlite:", await sqliteStore(reactor, options.count, options.limit))

    task.react(lambda reactor: Deferred.fromCoroutine(measure(reactor)))


if __name__ == "__main__":
    main()
