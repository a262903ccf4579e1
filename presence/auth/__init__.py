"""Who sent a request: digest authentication and asserted identities.

- `presence.auth.digest`: the digest scheme itself (RFC 7616, RFC 8760): the
  hashes, challenges and Authorization headers, and nonces that any server
  holding the same secret can verify without keeping them;
- `presence.auth.identity`: `Identity
  <presence.auth.identity.Identity>`, the user a request is known to come
  from, and the trusted peers whose P-Asserted-Identity (RFC 3325) is
  believed;
- `presence.auth.check`: `IdentityCheck
  <presence.auth.check.IdentityCheck>`, the request check the dispatcher
  runs before routing, which challenges, verifies and names the identity.

The package sits above the SIP stack and storage (credentials are read
through `presence.storage.credentials.ICredentialStore`) and below the core,
which it never imports: `presence.stack` gives the check to the dispatcher,
and the handlers receive the identity it returns.
"""
