"""A SIP presence server on Twisted."""

__version__ = "0.1.0"
