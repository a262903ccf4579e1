"""A SIP stack (RFC 3261) that knows nothing of presence."""
