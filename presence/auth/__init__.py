"""Who sent a request.

`presence.auth.identity`: `Identity <presence.auth.identity.Identity>`, the
user a request is known to come from, as a request check of the dispatcher
established it, and the trusted peers whose P-Asserted-Identity (RFC 3325)
is believed.

The package sits above the SIP stack and storage and below the core, which
it never imports: `presence.stack` gives the checks to the dispatcher, and
the handlers receive the identity they return.
"""
