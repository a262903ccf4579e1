"""The ``message-summary`` event package (RFC 3842), for message waiting.

A voicemail server PUBLISHes the state of a mailbox (as OpenSIPS's
``presence_mwi`` accepts it) and the owner's phone SUBSCRIBEs to it. Bodies
are ``application/simple-message-summary`` text (RFC 3842 section 5.2)::

    Messages-Waiting: yes
    Message-Account: sip:alice@vmail.example.com
    Voice-Message: 2/8 (0/2)

    Message-Id: 1234@vmail.example.com

A NOTIFY carries the newest publication's summary; there is nothing to
merge, because one mailbox has one state. With nothing published the
summary says ``Messages-Waiting: no`` for the presentity's account.

Watchers are not authorised through the privacy policy (OpenSIPS's
``presence_mwi`` sets ``req_auth`` to 0 too): the state of a mailbox is for
its owner, so the package is owner-only, and a SUBSCRIBE whose From is not
the presentity gets 403. That compares addresses and proves nothing: the
proxy in front must authenticate subscribers, as OpenSIPS configurations
do.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Final

from zope.interface import implementer

from presence.packages.base import EventPackage
from presence.packages.interfaces import Body, IEventPackage
from presence.sip.errors import BadRequest
from presence.storage.records import Publication, Subscription

MWI_TYPE: Final = "application/simple-message-summary"

#: The message-context-class values of RFC 3458 section 3.2.
MESSAGE_CLASSES: Final = frozenset(
    {
        "voice-message",
        "fax-message",
        "pager-message",
        "multimedia-message",
        "text-message",
        "none",
    }
)

#: RFC 3842 section 5.2: a msgcount "MUST NOT exceed 2^32-1".
MAX_COUNT: Final = 2**32 - 1

#: The largest body parsed, a guard on top of the server's body limit.
MAX_SUMMARY_SIZE: Final = 64 * 1024

# HCOLON = *( SP / HTAB ) ":" SWS (line folding is not used in summaries).
_HCOLON: Final = r"[ \t]*:[ \t]*"
_STATUS: Final = re.compile(rf"messages-waiting{_HCOLON}(.*?)[ \t]*", re.IGNORECASE)
_ACCOUNT: Final = re.compile(rf"message-account{_HCOLON}(.*?)[ \t]*", re.IGNORECASE)
_URI: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:\S+")
_COUNTS: Final = re.compile(
    r"(\d+)[ \t]*/[ \t]*(\d+)"
    r"(?:[ \t]*\([ \t]*(\d+)[ \t]*/[ \t]*(\d+)[ \t]*\))?[ \t]*"
)
# header-name is an RFC 3261 token.
_HEADER: Final = re.compile(r"([A-Za-z0-9\-.!%*_+`'~]+)" + _HCOLON + r"(.*)")


@dataclass(frozen=True)
class MessageCounts:
    """The counts of one message-context-class.

    Attributes:
        new: new messages.
        old: old messages.
        urgentNew: new urgent messages, when given.
        urgentOld: old urgent messages, when given.
    """

    new: int
    old: int
    urgentNew: int | None = None
    urgentOld: int | None = None


@dataclass(frozen=True)
class MessageSummary:
    """A parsed ``application/simple-message-summary`` body.

    Attributes:
        waiting: the ``Messages-Waiting`` status.
        account: the ``Message-Account`` URI, when given.
        counts: message-context-class (lower case) -> its counts.
        headers: the optional extension headers, in order, as written.
    """

    waiting: bool
    account: str | None = None
    counts: dict[str, MessageCounts] = field(default_factory=dict)
    headers: list[tuple[str, str]] = field(default_factory=list)


def _quote(text: str) -> str:
    """Text for a reason phrase: quoted, and cut short."""
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _count(text: str, line: str) -> int:
    value = int(text)
    if value > MAX_COUNT:
        raise BadRequest(f"message count too large in {_quote(line)}")
    return value


def _lines(body: bytes) -> list[str]:
    """The lines of a summary, split at CRLF or LF."""
    if len(body) > MAX_SUMMARY_SIZE:
        raise BadRequest("message summary too large")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("message summary is not UTF-8") from None
    lines = text.split("\n")
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    for line in lines:
        if "\r" in line:
            raise BadRequest("bare CR in message summary")
    while lines and lines[-1] == "":
        lines.pop()
    return lines


def parseSummary(body: bytes) -> MessageSummary:
    """Parse a message summary by the grammar of RFC 3842 section 5.2.

    Header names and the status are matched case-insensitively; lines may
    end in CRLF or LF.

    Raises:
        BadRequest: the body does not follow the grammar; the reason says
            where.
    """
    lines = _lines(body)
    if not lines:
        raise BadRequest("empty message summary")
    status = _STATUS.fullmatch(lines[0])
    if status is None:
        raise BadRequest("message summary must start with Messages-Waiting")
    value = status.group(1).lower()
    if value not in ("yes", "no"):
        raise BadRequest("Messages-Waiting must be yes or no")
    blank = lines.index("") if "" in lines else len(lines)
    account: str | None = None
    counts: dict[str, MessageCounts] = {}
    for position, line in enumerate(lines[1:blank]):
        name, colon, rest = line.partition(":")
        name = name.rstrip(" \t").lower()
        if not colon:
            raise BadRequest(f"malformed message summary line {_quote(line)}")
        if name == "messages-waiting":
            raise BadRequest("Messages-Waiting given twice")
        if name == "message-account":
            match = _ACCOUNT.fullmatch(line)
            if position != 0:
                raise BadRequest("Message-Account must follow Messages-Waiting")
            if match is None or not _URI.fullmatch(match.group(1)):
                raise BadRequest("Message-Account must be a URI")
            account = match.group(1)
            continue
        if name not in MESSAGE_CLASSES:
            raise BadRequest(f"unknown message-context-class {_quote(name)}")
        if name in counts:
            raise BadRequest(f"{name} given twice")
        match = _COUNTS.fullmatch(rest.lstrip(" \t"))
        if match is None:
            raise BadRequest(f"malformed message counts in {_quote(line)}")
        new, old, urgentNew, urgentOld = match.groups()
        counts[name] = MessageCounts(
            _count(new, line),
            _count(old, line),
            None if urgentNew is None else _count(urgentNew, line),
            None if urgentOld is None else _count(urgentOld, line),
        )
    headers: list[tuple[str, str]] = []
    for line in lines[blank + 1 :]:
        if line == "":
            # A blank line starts another group of headers (*opt-msg-headers).
            continue
        if line[0] in " \t" and headers:
            # A folded continuation of the header above (LWS).
            name, text = headers[-1]
            headers[-1] = (name, text + " " + line.strip(" \t"))
            continue
        match = _HEADER.fullmatch(line)
        if match is None:
            raise BadRequest(f"malformed message summary header {_quote(line)}")
        headers.append((match.group(1), match.group(2).rstrip(" \t")))
    return MessageSummary(value == "yes", account, counts, headers)


def noMessages(account: str) -> bytes:
    """The summary of an empty mailbox, for ``account``."""
    return f"Messages-Waiting: no\r\nMessage-Account: {account}\r\n".encode()


def _crlf(body: bytes) -> bytes:
    """Every line ended with CRLF, as RFC 3842's grammar writes them."""
    body = re.sub(rb"\r?\n", b"\r\n", body)
    return body if body.endswith(b"\r\n") else body + b"\r\n"


@implementer(IEventPackage)
class MessageSummaryPackage(EventPackage):
    """RFC 3842 message-summary with simple-message-summary bodies."""

    name = "message-summary"
    acceptTypes: ClassVar[list[str]] = [MWI_TYPE]
    notifyTypes: ClassVar[list[str]] = [MWI_TYPE]
    needsAuthorisation = False
    ownerOnly = True

    def validate(self, body: bytes, contentType: str) -> None:
        """Accept a summary that follows RFC 3842 section 5.2."""
        parseSummary(body)

    def notifyBody(
        self,
        presentity: str,
        subscription: Subscription,
        publications: Sequence[Publication],
    ) -> Body | None:
        """The newest publication's summary, every line ended with CRLF.

        With nothing published: ``Messages-Waiting: no`` with the
        presentity as the ``Message-Account``.
        """
        if not publications:
            return Body(MWI_TYPE, noMessages(presentity))
        return Body(MWI_TYPE, _crlf(publications[-1].body))
