"""Privacy rules: evaluations and transformations per second.

Run as ``python bench/policy.py``; ``--profile`` prints where the time goes,
``--seconds`` sets how long each case runs. The rules are an OMA-style
document of six rules (the owner; a granted and a blocked resource list; the
user's domain but two people, at work hours only; anonymous requests; every
other identity), parsed once, as the server would cache them by entity tag.
Each evaluation decides one watcher of 20,000 different ones against them,
building its `Watcher` from the user and domain the watchers table keeps;
the figures without that building are given too. Each transformation turns
one aggregated PIDF document (four tuples, two persons, two devices, RPID
throughout) into what one set of permissions shows, as a body cache would
do once per distinct set.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from presence.xcap.lists import resourceLists
from presence.xcap.rules import (
    EVERYTHING,
    Permissions,
    Selection,
    UserInput,
    Watcher,
    parseRuleSet,
)
from presence.xcap.transform import currentSphere, transform

CP = "urn:ietf:params:xml:ns:common-policy"
PR = "urn:ietf:params:xml:ns:pres-rules"
OCP = "urn:oma:xml:xdm:common-policy"
ANCHOR = (
    "http://xcap.example.com/resource-lists/users/sip:bob@example.com/index"
    "/~~/resource-lists/list%5b@name=%22{}%22%5d"
)

RULES = f"""<?xml version="1.0" encoding="UTF-8"?>
<cr:ruleset xmlns:cr="{CP}" xmlns:pr="{PR}" xmlns:ocp="{OCP}">
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
      <ocp:entry anc="{ANCHOR.format("oma_grantedcontacts")}"/>
    </ocp:external-list></cr:conditions>
    <cr:actions><pr:sub-handling>allow</pr:sub-handling></cr:actions>
    <cr:transformations>
      <pr:provide-services><pr:all-services/></pr:provide-services>
      <pr:provide-persons><pr:all-persons/></pr:provide-persons>
      <pr:provide-activities>true</pr:provide-activities>
      <pr:provide-mood>true</pr:provide-mood>
      <pr:provide-note>true</pr:provide-note>
      <pr:provide-user-input>bare</pr:provide-user-input>
    </cr:transformations>
  </cr:rule>
  <cr:rule id="wp_prs_blockedcontacts">
    <cr:conditions><ocp:external-list>
      <ocp:entry anc="{ANCHOR.format("oma_blockedcontacts")}"/>
    </ocp:external-list></cr:conditions>
    <cr:actions><pr:sub-handling>block</pr:sub-handling></cr:actions>
  </cr:rule>
  <cr:rule id="colleagues">
    <cr:conditions>
      <cr:identity><cr:many domain="example.com">
        <cr:except id="sip:boss@example.com"/><cr:except id="sip:hr@example.com"/>
      </cr:many></cr:identity>
      <cr:sphere value="work"/>
      <cr:validity><cr:from>2024-01-01T00:00:00Z</cr:from>
        <cr:until>2030-01-01T00:00:00Z</cr:until></cr:validity>
    </cr:conditions>
    <cr:actions><pr:sub-handling>allow</pr:sub-handling></cr:actions>
    <cr:transformations>
      <pr:provide-services><pr:service-uri-scheme>sip</pr:service-uri-scheme>
      </pr:provide-services>
      <pr:provide-persons><pr:class>work</pr:class></pr:provide-persons>
      <pr:provide-activities>true</pr:provide-activities>
    </cr:transformations>
  </cr:rule>
  <cr:rule id="wp_prs_anonymous">
    <cr:conditions><ocp:anonymous-request/></cr:conditions>
    <cr:actions><pr:sub-handling>polite-block</pr:sub-handling></cr:actions>
  </cr:rule>
  <cr:rule id="wp_prs_unlisted">
    <cr:conditions><ocp:other-identity/></cr:conditions>
    <cr:actions><pr:sub-handling>confirm</pr:sub-handling></cr:actions>
  </cr:rule>
</cr:ruleset>
""".encode()

LISTS = f"""<?xml version="1.0" encoding="UTF-8"?>
<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists">
  <list name="oma_grantedcontacts">
    {"".join(f'<entry uri="sip:friend{i}@example.net"/>' for i in range(200))}
  </list>
  <list name="oma_blockedcontacts">
    {"".join(f'<entry uri="sip:pest{i}@example.org"/>' for i in range(50))}
  </list>
</resource-lists>
""".encode()

PIDF = b"""<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
  xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
  xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"
  xmlns:caps="urn:ietf:params:xml:ns:pidf:caps"
  entity="sip:bob@example.com">
  <tuple id="t1"><status><basic>open</basic></status>
    <rpid:class>business</rpid:class><dm:deviceID>urn:uuid:d1</dm:deviceID>
    <rpid:user-input idle-threshold="600" last-input="2024-06-01T11:50:00Z">idle
    </rpid:user-input>
    <caps:servcaps><caps:audio>true</caps:audio></caps:servcaps>
    <contact priority="0.8">sip:bob@192.0.2.10</contact>
    <note>Desk phone</note><timestamp>2024-06-01T11:59:00Z</timestamp></tuple>
  <tuple id="t2"><status><basic>open</basic></status>
    <contact>sip:bob@192.0.2.11;transport=tcp</contact></tuple>
  <tuple id="t3"><status><basic>open</basic></status>
    <contact>mailto:bob@example.com</contact></tuple>
  <tuple id="t4"><status><basic>closed</basic></status>
    <contact>im:bob@example.com</contact><note>Chat</note></tuple>
  <note>Back at three</note>
  <dm:person id="p1">
    <rpid:activities><rpid:meeting/></rpid:activities><rpid:class>work</rpid:class>
    <rpid:mood><rpid:busy/></rpid:mood><rpid:sphere>work</rpid:sphere>
    <rpid:place-type><rpid:other>office</rpid:other></rpid:place-type>
    <rpid:time-offset>120</rpid:time-offset>
    <dm:note>In a meeting</dm:note><dm:timestamp>2024-06-01T11:58:00Z</dm:timestamp>
  </dm:person>
  <dm:person id="p2"><rpid:class>home</rpid:class>
    <rpid:activities><rpid:away/></rpid:activities></dm:person>
  <dm:device id="d1"><rpid:class>desk</rpid:class>
    <dm:deviceID>urn:uuid:d1</dm:deviceID></dm:device>
  <dm:device id="d2"><dm:deviceID>urn:uuid:d2</dm:deviceID></dm:device>
</presence>
"""

NOW = datetime(2024, 6, 1, 12, tzinfo=UTC).timestamp()


def watchers(count: int = 20000) -> list[tuple[str, str]]:
    """Users and domains: granted, blocked, colleagues, strangers, anonymous."""
    out = []
    for i in range(count):
        kind = i % 5
        if kind == 0:
            out.append((f"friend{i % 200}", "example.net"))
        elif kind == 1:
            out.append((f"pest{i % 50}", "example.org"))
        elif kind == 2:
            out.append((f"colleague{i}", "example.com"))
        elif kind == 3:
            out.append((f"stranger{i}", "example.info"))
        else:
            out.append(("anonymous", "anonymous.invalid"))
    return out


PERMISSIONS: dict[str, Permissions] = {
    "nothing": Permissions(),
    "colleague": Permissions(
        services=Selection(schemes=frozenset({"sip"})),
        persons=Selection(classes=frozenset({"work"})),
        attributes=frozenset({"activities"}),
    ),
    "friend": Permissions(
        services=EVERYTHING,
        persons=EVERYTHING,
        attributes=frozenset({"activities", "mood", "note"}),
        userInput=UserInput.BARE,
    ),
    "owner": Permissions(
        services=EVERYTHING, persons=EVERYTHING, devices=EVERYTHING, allAttributes=True
    ),
}


def rate(fn: Callable[[int], object], seconds: float, batch: int = 20000) -> float:
    """Run ``fn(i)`` for about ``seconds``; return calls per second (best of 5)."""
    best = 0.0
    n = batch
    for _ in range(5):
        start = time.perf_counter()
        for i in range(n):
            fn(i)
        elapsed = time.perf_counter() - start
        best = max(best, n / elapsed)
        n = max(batch, int(best * seconds / 5))
    return best


def cases() -> Sequence[tuple[str, Callable[[int], object]]]:
    """The cases, each a function of the iteration number."""
    rules = parseRuleSet([RULES])
    lists = resourceLists(LISTS)
    sphere = currentSphere(PIDF)
    parts = watchers()
    built = [Watcher.fromParts(user, domain) for user, domain in parts]
    size = len(parts)

    def evaluateBuilt(i: int) -> object:
        return rules.evaluate(built[i % size], NOW, sphere, lists)

    def evaluateFromParts(i: int) -> object:
        user, domain = parts[i % size]
        return rules.evaluate(Watcher.fromParts(user, domain), NOW, sphere, lists)

    def parse(i: int) -> object:
        return parseRuleSet([RULES])

    out: list[tuple[str, Callable[[int], object]]] = [
        ("evaluate (Watcher built)", evaluateBuilt),
        ("evaluate (+ Watcher.fromParts)", evaluateFromParts),
        ("parse rules document", parse),
        ("currentSphere", lambda i: currentSphere(PIDF)),
    ]
    for name, permissions in PERMISSIONS.items():
        out.append((f"transform: {name}", transformWith(permissions)))
    return out


def transformWith(permissions: Permissions) -> Callable[[int], object]:
    """A case transforming the PIDF for these permissions."""

    def run(i: int) -> object:
        return transform(PIDF, permissions)

    return run


def main() -> None:
    """Print the table, or the profile."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", action="store_true", help="print the top functions")
    ap.add_argument("--seconds", type=float, default=2.0, help="time per case")
    ap.add_argument("--top", type=int, default=20, help="functions to show")
    args = ap.parse_args()
    if args.profile:
        for name, fn in cases():
            print(f"== {name}, 20000 iterations")
            profiler = cProfile.Profile()
            profiler.enable()
            for i in range(20000):
                fn(i)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)
        return
    print(f"{'case':<34} {'per second':>12} {'us each':>9}")
    for name, fn in cases():
        batch = 20000 if name.startswith("evaluate") else 500
        per = rate(fn, args.seconds, batch)
        print(f"{name:<34} {per:>12,.0f} {1e6 / per:>9.2f}")


if __name__ == "__main__":
    main()
