"""Client TLS options for the connections the server makes (RFC 3261 26.3.1).

A NOTIFY whose subscriber came over TLS, and whose connection is gone, goes
over a new TLS connection to the subscriber's Contact. `clientTLS` makes
what `presence.sip.transport.SIPTransports` is given to open them with.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import ssl

from presence.sip.transport import ClientTLS


def clientTLS(verify: bool = False, caFile: str | None = None) -> ClientTLS:
    """Client TLS options, per server name, for outgoing TLS connections.

    Args:
        verify: check the peer's certificate: signed by an authority of
            ``caFile`` (or of the system's trust store) and issued for the
            name connected to (``tls_verify``). Without it any certificate
            is taken: the connection is encrypted, but the peer is not
            authenticated.
        caFile: a PEM file of trusted authorities (``tls_ca``); ``None``:
            the system's trust store.

    Returns:
        A callable taking the server name and returning an
        ``IOpenSSLClientConnectionCreator``.
    """
    if not verify:
        unverified = ssl.CertificateOptions(verify=False)

        def anyPeer(serverName: str) -> Any:
            return unverified

        return anyPeer
    trustRoot: Any = ssl.platformTrust()
    if caFile is not None:
        with open(caFile, "rb") as f:
            trustRoot = ssl.trustRootFromCertificates(
                [ssl.Certificate.loadPEM(pem) for pem in _pemBlocks(f.read())]
            )

    def verifiedPeer(serverName: str) -> Any:
        return ssl.optionsForClientTLS(serverName, trustRoot=trustRoot)

    return verifiedPeer


def _pemBlocks(data: bytes) -> list[bytes]:
    """The certificates of a PEM file, one block each."""
    end = b"-----END CERTIFICATE-----"
    blocks = []
    for part in data.split(end)[:-1]:
        start = part.find(b"-----BEGIN CERTIFICATE-----")
        if start >= 0:
            blocks.append(part[start:] + end + b"\n")
    return blocks


__all__ = ["clientTLS"]
