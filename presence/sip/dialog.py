"""Building requests inside a dialog (RFC 3261 section 12.2.1.1).

The dialog's state is what the notifier keeps of a subscription: the Call-ID,
the two tags (carried inside the From and To header values as first seen),
the remote target, the route set and the local CSeq.
"""

from __future__ import annotations

from collections.abc import Sequence

from presence.sip.grammar import splitList
from presence.sip.message import SIPRequest
from presence.sip.uri import URI, NameAddr, parseNameAddr, parseURI


def routeSet(recordRoute: str) -> list[NameAddr]:
    """Parse a stored route set (Route header text, comma-separated).

    Raises:
        SIPParseError: the text is malformed.
    """
    if not recordRoute:
        return []
    return [parseNameAddr(v) for v in splitList(recordRoute)]


def requestInDialog(
    method: str,
    remoteTarget: str,
    recordRoute: str,
    localHeader: str,
    remoteHeader: str,
    callId: str,
    cseq: int,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
) -> tuple[SIPRequest, URI]:
    """Build a request inside a dialog, and say where it must be sent.

    With a loose-routing first hop (``lr``) the Request-URI is the remote
    target and the Route headers are the route set; with a strict router the
    Request-URI is the first route and the remote target goes last.

    Args:
        method: the method.
        remoteTarget: the peer's Contact URI.
        recordRoute: the route set as Route header text.
        localHeader: our From header value, with our tag.
        remoteHeader: the peer's header value, with its tag, for To.
        callId: the Call-ID.
        cseq: the CSeq number.
        headers: further headers.
        body: the body.

    Returns:
        The request (without Via) and the URI of its next hop.

    Raises:
        SIPParseError: the stored target or route set is malformed.
    """
    target = parseURI(remoteTarget)
    routes = routeSet(recordRoute)
    uri: URI = target
    routeValues = [str(r) for r in routes]
    nextHop: URI = target
    if routes:
        first = routes[0].uri
        nextHop = first
        if "lr" not in getattr(first, "params", {}):
            uri = first
            routeValues = [*routeValues[1:], f"<{remoteTarget}>"]
    out: list[tuple[str, str]] = [(("route", v)) for v in routeValues]
    out += [
        ("max-forwards", "70"),
        ("to", remoteHeader),
        ("from", localHeader),
        ("call-id", callId),
        ("cseq", f"{cseq} {method}"),
    ]
    out.extend(headers)
    return SIPRequest(method, uri, out, body), nextHop


__all__ = ["requestInDialog", "routeSet"]
