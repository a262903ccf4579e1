"""The root of the server's own errors.

Every error the server raises on purpose (configuration, storage, XCAP) is a
`PresenceError`. The SIP stack is a library that knows nothing of the
server: its errors (`SIPError` and the status subclasses, `SIPParseError`,
`TransportError`) live in `presence.sip.errors`, rooted in `SIPStackError`.
"""

from __future__ import annotations


class PresenceError(Exception):
    """The root of every error the server (not its SIP stack) raises on purpose."""
