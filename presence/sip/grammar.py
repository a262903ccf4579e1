"""The grammar SIP header values share: tokens, quoting, escapes, parameters, lists.

RFC 3261 sections 7.3.1, 19.1.2 and 25.1. The regular-expression fragments
here (``_TOKEN``, ``_QUOTED``, ``_PARAMS``) are the pieces that
`presence.sip.uri` and `presence.sip.headers` compose into the expressions
of whole values. Names with a leading underscore are shared with those
sibling modules and `presence.sip.message` only; they are not part of the
API.

Values that repeat from message to message are parsed once and kept in small
module-level caches in those modules, each emptied when it reaches
``_CACHE_LIMIT`` entries. The caches hold only immutable parts; every parse
returns new objects, so changing a parsed value never affects another
message.
"""

from __future__ import annotations

import re
from itertools import pairwise
from typing import Final

from presence.sip.errors import SIPParseError

# A token (RFC 3261 25.1).
_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_TOKEN_RE: Final = re.compile(_TOKEN)

# Parameters: ;name[=value] where value is a token, a host or a quoted string.
# A quoted string (RFC 3261 25.1: qdtext or a backslash and any character).
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_PVALUE = r"(?:" + _QUOTED + r"|[A-Za-z0-9\-.!%*_+`'~:\[\]]+)"
_PARAMS = r"(?:[ \t]*;[ \t]*" + _TOKEN + r"(?:[ \t]*=[ \t]*" + _PVALUE + r")?)*"
_PARAMS_FULL_RE: Final = re.compile(_PARAMS + r"[ \t]*")
_PARAM_ITEM_RE: Final = re.compile(
    r";[ \t]*(" + _TOKEN + r")(?:[ \t]*(=)[ \t]*(" + _PVALUE + r"))?"
)

#: The size at which a cache of parsed values is emptied.
_CACHE_LIMIT: Final = 4096


def isToken(text: str) -> bool:
    """Tell whether ``text`` is a non-empty RFC 3261 token."""
    return _TOKEN_RE.fullmatch(text) is not None


def splitList(value: str) -> list[str]:
    """Split a header value at commas outside quotes and angle brackets.

    Args:
        value: the value of a list header.

    Returns:
        The elements, stripped of surrounding whitespace.

    Raises:
        SIPParseError: an element is empty or a quote is unterminated.
    """
    if '"' not in value and "<" not in value:
        parts = [p.strip() for p in value.split(",")]
    else:
        commas, openQuote = _topLevelCommas(value)
        if openQuote:
            raise SIPParseError("unterminated quoted string")
        bounds = [-1, *commas, len(value)]
        parts = [value[start + 1 : end].strip() for start, end in pairwise(bounds)]
    if "" in parts:
        raise SIPParseError("empty element in a list header")
    return parts


def firstElement(value: str) -> str:
    """The first element of a list header value, without parsing the rest.

    Commas inside quotes and angle brackets do not count; the element is
    stripped of surrounding whitespace.
    """
    if "," not in value:
        return value.strip()
    if '"' not in value and "<" not in value:
        return value.split(",", 1)[0].strip()
    commas, _ = _topLevelCommas(value, first=True)
    return value[: commas[0]].strip() if commas else value.strip()


def _topLevelCommas(value: str, first: bool = False) -> tuple[list[int], bool]:
    """The positions of the commas outside quotes and angle brackets.

    Args:
        value: a list header value.
        first: stop at the first such comma.

    Returns:
        The positions, and whether a quoted string was left open.
    """
    commas: list[int] = []
    inQuote = inAngle = False
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        if inQuote:
            if ch == "\\":
                i += 1
            elif ch == '"':
                inQuote = False
        elif ch == '"':
            inQuote = True
        elif ch == "<":
            inAngle = True
        elif ch == ">":
            inAngle = False
        elif ch == "," and not inAngle:
            commas.append(i)
            if first:
                break
        i += 1
    return commas, inQuote


def parseParams(text: str, pos: int = 0) -> dict[str, str | None]:
    """Parse ``;name=value`` parameters from ``text`` starting at ``pos``.

    Names are lower-cased; values keep their case, quoted strings keep their
    quotes. Whatever follows the parameters must be whitespace only.

    Raises:
        SIPParseError: the parameters are malformed.
    """
    if pos >= len(text):
        return {}
    if _PARAMS_FULL_RE.fullmatch(text, pos) is None:
        raise SIPParseError(f"malformed parameters: {text[pos:]!r}")
    return _paramDict(text[pos:])


def _paramDict(paramText: str) -> dict[str, str | None]:
    """The parameters of text already checked against ``_PARAMS``."""
    if not paramText:
        return {}
    items = _PARAM_ITEM_RE.findall(paramText)
    if len(items) == 1:
        name, eq, value = items[0]
        return {name.lower(): value if eq else None}
    params = {name.lower(): (value if eq else None) for name, eq, value in items}
    if len(params) != len(items):
        # RFC 3261 section 7.3.1: a parameter name appears at most once.
        raise SIPParseError(f"repeated parameter: {paramText!r}")
    return params


def formatParams(params: dict[str, str | None]) -> str:
    """Write parameters as ``;name=value``, in order."""
    return "".join(
        f";{name}" if value is None else f";{name}={value}"
        for name, value in params.items()
    )


def unquote(text: str) -> str:
    """Remove the quotes and backslash escapes of a quoted string."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return _unbackslash(text[1:-1])
    return text


_BACKSLASH_RE: Final = re.compile(r"\\(.)", re.DOTALL)


def _unbackslash(text: str) -> str:
    return _BACKSLASH_RE.sub(r"\1", text) if "\\" in text else text


def quote(text: str) -> str:
    """Write ``text`` as a quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unescape(text: str) -> str:
    """Decode ``%HH`` escapes (RFC 3261 section 19.1.2) as UTF-8."""
    if "%" not in text:
        return text
    encoded = text.encode("utf-8", "surrogateescape")
    raw = _ESCAPE_RE.sub(lambda m: bytes((int(m.group(1), 16),)), encoded)
    return raw.decode("utf-8", "surrogateescape")


_ESCAPE_RE: Final = re.compile(rb"%([0-9A-Fa-f]{2})")


__all__ = [
    "firstElement",
    "formatParams",
    "isToken",
    "parseParams",
    "quote",
    "splitList",
    "unescape",
    "unquote",
]
