"""REGISTER (RFC 3261 section 10).

The bindings phones make before they publish or subscribe.

Bindings are kept in the store (the ``location`` table). Nothing else in the
server requires a registration: PUBLISH and SUBSCRIBE work without one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from presence.auth.identity import Identity, requireIdentity
from presence.core.subscribe import refuseOversized
from presence.packages.interfaces import ExpiryRange
from presence.sip.errors import (
    BadRequest,
    IntervalTooBrief,
    NotFound,
    ServerInternalError,
    SIPParseError,
)
from presence.sip.message import SIPURI, SIPRequest, formatParams, parseInteger
from presence.sip.transaction import ServerTransaction
from presence.storage.interfaces import IPresenceStore
from presence.storage.records import Binding
from presence.storage.rows import bindingRow
from presence.storage.statements import LOCATION

#: The registrar's expiry bounds unless configured otherwise: an hour by
#: default, a minute at the least, two hours at the most.
REGISTRAR_EXPIRES: Final = ExpiryRange(default=3600, minimum=60, maximum=7200)


class Registrar:
    """Keeps the bindings of addresses of record."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        store: IPresenceStore,
        domains: Sequence[str] = (),
        defaultExpires: int = REGISTRAR_EXPIRES.default,
        minExpires: int = REGISTRAR_EXPIRES.minimum,
        maxExpires: int = REGISTRAR_EXPIRES.maximum,
    ) -> None:
        """Serve ``domains`` (all when empty) with these expiry bounds.

        Args:
            clock: the clock expiry times are read from.
            store: where bindings are kept.
            domains: the domains served; every domain when empty.
            defaultExpires: the expiry of a Contact that asks for none (no
                ``expires`` parameter, no Expires header).
            minExpires: below this, but not 0, a REGISTER gets 423 with it
                as Min-Expires.
            maxExpires: a longer expiry is lowered to this.
        """
        self.clock = clock
        self.store = store
        self.domains = [d.lower() for d in domains]
        self.defaultExpires = defaultExpires
        self.minExpires = minExpires
        self.maxExpires = maxExpires
        self.registrations = 0

    async def __call__(
        self,
        request: SIPRequest,
        transaction: ServerTransaction,
        identity: Identity | None = None,
    ) -> None:
        """Answer a REGISTER (RFC 3261 section 10.3).

        Args:
            request: the REGISTER.
            transaction: its server transaction.
            identity: who sent it, when the request checks know. Step 4: "If
                the authenticated user is not authorized to modify bindings,
                the registrar MUST return a 403 (Forbidden)"; only the owner
                of an address of record may change its bindings here.
        """
        to = request.toAddr.uri
        if not isinstance(to, SIPURI) or not to.user:
            raise NotFound("the To must name a SIP address of record")
        if self.domains and to.host.lower() not in self.domains:
            raise NotFound("domain not served here")
        aor = to.aor()
        requireIdentity(identity, aor, "register")
        callId = request.callId
        cseq = request.cseq.number
        now = self.clock.seconds()
        headerExpires = request.expires
        if request.contactStar:
            # Step 6: "*" must stand alone, with Expires: 0.
            if headerExpires != 0 or len(request.headerValues("contact")) != 1:
                raise BadRequest("Contact * needs Expires: 0 and no other Contact")
            for binding in await self.store.bindings(aor):
                if binding.callId == callId and cseq <= binding.cseq:
                    raise ServerInternalError("CSeq out of order")
            for binding in await self.store.bindings(aor):
                await self.store.removeBinding(aor, binding.contact)
            await self._ok(transaction, aor, now)
            return
        existing = {b.contact: b for b in await self.store.bindings(aor)}
        changes: list[tuple[str, int, Binding | None, str, float | None]] = []
        for contact in request.contacts:
            raw = contact.params.get("expires")
            if raw is not None:
                try:
                    expires = parseInteger(raw, "expires")
                except SIPParseError:
                    expires = self.defaultExpires
            elif headerExpires is not None:
                expires = headerExpires
            else:
                expires = self.defaultExpires
            if 0 < expires < self.minExpires:
                raise IntervalTooBrief(self.minExpires)
            expires = min(expires, self.maxExpires)
            uri = str(contact.uri)
            old = existing.get(uri)
            if old is not None and old.callId == callId and cseq <= old.cseq:
                raise ServerInternalError("CSeq out of order")
            kept = {k: v for k, v in contact.params.items() if k != "expires"}
            q = None
            if "q" in kept:
                try:
                    q = float(kept["q"] or "")
                except ValueError:
                    raise BadRequest("malformed q") from None
            changes.append((uri, expires, old, formatParams(kept), q))
        removed: list[str] = []
        bindings: list[Binding] = []
        for uri, expires, _old, params, q in changes:
            if expires == 0:
                removed.append(uri)
                continue
            binding = Binding(
                aor=aor,
                contact=uri,
                expires=now + expires,
                q=q,
                callId=callId,
                cseq=cseq,
                received=str(transaction.peer),
                path=", ".join(request.headerValues("path")),
                userAgent=request.header("user-agent") or "",
                params=params,
            )
            refuseOversized(LOCATION, bindingRow(binding))
            bindings.append(binding)
        for uri in removed:
            await self.store.removeBinding(aor, uri)
        for binding in bindings:
            await self.store.putBinding(binding)
        self.registrations += 1
        await self._ok(transaction, aor, now)

    async def _ok(self, transaction: ServerTransaction, aor: str, now: float) -> None:
        headers = [
            (
                "Contact",
                f"<{b.contact}>{b.params};expires={max(0, math.ceil(b.expires - now))}",
            )
            for b in await self.store.bindings(aor)
        ]
        transaction.respond(transaction.response(200, "", headers))
