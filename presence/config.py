"""The server's configuration: one frozen object, from TOML and the command line.

Every setting has a default, so the server runs with no file at all. A TOML
file names settings in snake case (``sip_trace = true``); command-line options
given on top of it win.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from presence.errors import PresenceError

DEFAULT_LISTEN = ("udp:5060", "tcp:5060")

#: Where the administration site (XML-RPC and metrics) listens by default.
DEFAULT_ADMIN_LISTEN = "tcp:8080:interface=127.0.0.1"


class ConfigError(PresenceError):
    """The configuration is invalid; the message says which setting and why."""


@dataclass(frozen=True)
class ListenAddress:
    """One place to listen, parsed from ``udp:5060:interface=127.0.0.1``.

    Attributes:
        transport: ``"udp"``, ``"tcp"`` or ``"tls"``.
        port: the port (0 picks a free one).
        interface: the address to bind, ``""`` for all.
        description: the text it was parsed from.
    """

    transport: str
    port: int
    interface: str
    description: str

    def endpointDescription(self) -> str:
        """The description for ``serverFromString`` (TCP and TLS).

        A TLS listener's description is Twisted's ``ssl:`` one, passed
        through as it was written after ``tls:`` (or ``ssl:``).
        """
        if self.transport == "tls":
            return "ssl:" + self.description.strip().partition(":")[2]
        interface = self.interface.replace(":", "\\:")
        if self.interface:
            kind = "tcp6" if ":" in self.interface else "tcp"
            return f"{kind}:{self.port}:interface={interface}"
        return f"tcp:{self.port}"


def _splitEndpoint(description: str) -> list[str]:
    """Split at colons not escaped with a backslash."""
    parts, current, escaped = [], [], False
    for ch in description:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def parseListen(description: str) -> ListenAddress:
    """Parse a listen description in Twisted's endpoint style.

    ``udp:5060``, ``tcp:5060:interface=127.0.0.1``, ``udp:5060:interface=::1``
    (an IPv6 interface may be written with or without backslash escapes).
    ``tls:5061:privateKey=KEY:certKey=CERT`` (or ``ssl:...``) listens for
    SIP over TLS: what follows ``tls:`` is Twisted's ``ssl:`` server
    endpoint syntax, handed to ``serverFromString`` as it is.

    Raises:
        ConfigError: the description is not understood.
    """
    text = description.strip()
    kind, _, rest = text.partition(":")
    kind = kind.lower()
    if kind in ("tls", "ssl"):
        return _parseTLSListen(description, rest)
    if kind in ("tcp6", "udp6"):
        kind = kind[:3]
    if kind not in ("udp", "tcp") or not rest:
        raise ConfigError(
            f"listen {description!r}: expected udp:PORT, tcp:PORT"
            " with an optional :interface=ADDRESS, or"
            " tls:PORT:privateKey=KEY:certKey=CERT"
        )
    interface = ""
    marker = rest.find(":interface=")
    if marker >= 0:
        interface = rest[marker + len(":interface=") :].replace("\\", "")
        rest = rest[:marker]
    parts = _splitEndpoint(rest)
    portText = parts[0]
    for extra in parts[1:]:
        key, _, value = extra.partition("=")
        if key == "port":
            portText = value
        elif key:
            raise ConfigError(f"listen {description!r}: unknown argument {key!r}")
    if portText.startswith("port="):
        portText = portText[5:]
    if not portText.isdigit() or int(portText) > 65535:
        raise ConfigError(f"listen {description!r}: bad port {portText!r}")
    return ListenAddress(kind, int(portText), interface, description)


def _parseTLSListen(description: str, rest: str) -> ListenAddress:
    """Parse what follows ``tls:`` for its port and interface only.

    The rest (keys, certificates, ciphers) is Twisted's to read when the
    server starts listening: ``serverFromString`` loads the files.

    Raises:
        ConfigError: no port, or no ``privateKey``.
    """
    parts = _splitEndpoint(rest)
    portText, interface, keys = "", "", set()
    for i, part in enumerate(parts):
        key, equals, value = part.partition("=")
        if not equals and i == 0:
            portText = key
        elif key == "port":
            portText = value
        elif key == "interface":
            interface = value
        keys.add(key)
    if not portText.isdigit() or int(portText) > 65535:
        raise ConfigError(f"listen {description!r}: bad port {portText!r}")
    if "privateKey" not in keys:
        raise ConfigError(
            f"listen {description!r}: a TLS listener needs"
            " privateKey=KEY (and certKey=CERT unless KEY holds both)"
        )
    return ListenAddress("tls", int(portText), interface, description)


@dataclass(frozen=True)
class Config:
    """Every setting of the server.

    Attributes:
        listen: where to listen for SIP, as endpoint-style descriptions.
        domains: the domains served; empty serves every domain.
        sipTrace: log every SIP message in and out with its peer.
        tcpIdleTimeout: seconds after which an idle TCP connection closes.
            The default outlasts the longest subscription (7200 s), so that a
            connection carrying one is kept until its refresh comes: NOTIFYs
            go back over it, and a phone behind NAT is reachable no other way.
        maxBodySize: the largest body accepted, in bytes (larger: 513).
        advertisedAddress: the host put in Via and Contact, when the
            listening address is not what peers should use.
        offlineBody: what a presence NOTIFY carries when nothing is
            published: ``"closed"`` (a PIDF with a closed tuple) or
            ``"empty"`` (no body).
        database: ``"memory"``, ``"sqlite:PATH"`` (relative to the working
            directory, or ``sqlite:///ABSOLUTE``) or
            ``"postgresql://user@host:port/name"``.
        fallback2db: shared mode: every read and write goes to the database,
            so that several servers can share it.
        dbUpdatePeriod: seconds between flushes of the cache (cache mode).
        cleanPeriod: seconds between sweeps of expired state.
        createTables: create missing tables at start.
        dbConnections: PostgreSQL connections in the pool; queries beyond
            this many wait for a connection.
        nodeTimeout: shared mode on PostgreSQL: seconds without a heartbeat
            after which a server of the cluster is dead and its
            subscriptions are taken over.
        serverId: shared mode: this server's id in the cluster (the
            ``sharing_tag`` of the subscriptions it owns), at most 32
            characters; ``None``: the host name's first label and the first
            listening port, ``host:5060``.
        dbStatementTimeout: PostgreSQL: seconds a statement may run before
            the database cancels it (``statement_timeout``), so that a
            stuck database gets 503 rather than hanging requests; 0: none.
        minExpires: the least SUBSCRIBE expiry accepted (shorter, but not 0,
            gets 423 with this as Min-Expires), for every event package;
            ``None`` keeps each package's own.
        maxExpires: the longest SUBSCRIBE expiry granted (longer ones are
            lowered to it); ``None`` keeps each package's own.
        defaultExpires: the SUBSCRIBE expiry when the request has no
            Expires; ``None`` keeps each package's own.
        minExpiresPublish: ``minExpires`` for PUBLISH.
        maxExpiresPublish: ``maxExpires`` for PUBLISH.
        defaultExpiresPublish: ``defaultExpires`` for PUBLISH.
        registrarMinExpires: the least REGISTER expiry accepted (423 below);
            ``None`` keeps the registrar's own, 60.
        registrarMaxExpires: the longest REGISTER expiry granted; ``None``
            keeps the registrar's own, 7200.
        registrarDefaultExpires: the REGISTER expiry of a Contact that gives
            none (no ``expires`` parameter and no Expires header); ``None``
            keeps the registrar's own, 3600.
        authentication: challenge PUBLISH, SUBSCRIBE and REGISTER with digest
            authentication (RFC 3261 section 22, RFC 8760).
        authAlgorithms: the digest algorithms offered, most preferred first:
            one WWW-Authenticate each, in this order.
        authRealm: the realm of every challenge; ``None``: the domain of the
            address of record being authenticated
            (`presence.auth.check.claimedAddress`).
        nonceLifetime: seconds a nonce is accepted; an older one gets 401
            with ``stale=true``.
        nonceSecret: the key nonces are signed with; servers given the same
            one accept each other's nonces. ``None``: random at start.
        trustedPeers: addresses and networks whose requests are not
            challenged and whose P-Asserted-Identity (RFC 3325) is believed.
        adminListen: where the administration site (XML-RPC on ``/RPC2``,
            Prometheus metrics on ``/metrics``) listens, as a Twisted server
            endpoint description, or ``"none"`` for no administration site.
        adminUser: the user name the administration site asks for (HTTP
            basic authentication) when ``adminPassword`` is set.
        adminPassword: the password of the administration site; ``None``:
            no authentication, allowed only on a loopback address.
        forceActive: every watcher is active and sees everything, no rules
            are read; ``None`` (not set): true unless an XCAP mode is set
            (`forceActiveInEffect`).
        integratedXcapServer: the integrated XCAP mode: privacy rules are
            read from the database's ``xcap`` table, which an XCAP server
            (OpenXCAP, Kamailio's xcap_server) writes.
        xcapServer: the external XCAP mode's XCAP roots
            (``http://host:port/xcap-root``): privacy rules are fetched from
            the first, the next when one fails
            (`presence.xcap.client.XCAPClient`), into the ``xcap`` table.
        periodicalQuery: whether the external mode fetches every document
            held again every ``queryPeriod`` seconds.
        queryPeriod: seconds between the external mode's checks.
        pidfManipulation: each user's hard state (RFC 4827
            pidf-manipulation, ``doc_type`` 16) is aggregated with what is
            published: read from the ``xcap`` table, or fetched with the
            pres-rules in the external mode. Needs an XCAP mode.
        sourceRateLimit: requests a second accepted from one source address
            (trusted peers excepted), with a burst of twice that; over it,
            503 with Retry-After, and beyond four times it the excess is
            dropped (`presence.core.limits.SourceRateLimit`). 0: no limit.
        maxSubscriptionsPerWatcher: the most subscriptions one watcher may
            hold; an initial SUBSCRIBE beyond it gets 403. 0: no limit.
        maxPublicationsPerPresentity: the most publications one presentity
            may have of one event package; an initial PUBLISH beyond it gets
            403. 0: no limit.
        maxTcpConnections: the most accepted TCP and TLS connections open
            at once, counted together; one more is closed on arrival. 0: no
            limit.
        tcpReadTimeout: seconds an incomplete message, or a TLS handshake,
            may take to arrive on a TCP or TLS connection before the
            connection is closed. 0: for ever.
        udpMtu: the size in bytes above which a request this server sends
            to a UDP destination (a NOTIFY) goes over TCP to the same host
            and port instead, its top Via saying TCP (RFC 3261 section
            18.1.1, Kamailio's ``udp_mtu``); back to UDP when the
            connection is refused or reset and the request fits a datagram.
            0: always UDP.
        tlsVerify: verify the certificate of a peer this server connects to
            over TLS (a NOTIFY whose subscriber's connection is gone) against
            ``tlsCa``, or the system's trust store; off by default, since
            phones rarely hold certificates a public authority signed.
        tlsCa: a PEM file of the certificate authorities ``tlsVerify``
            trusts; ``None``: the system's.

    An expiry setting replaces only its own bound; how the bounds left to a
    package (or the registrar) yield to it is
    `presence.core.expirypolicy.ExpiryOverrides`'s rule.
    """

    listen: tuple[str, ...] = DEFAULT_LISTEN
    domains: tuple[str, ...] = ()
    sipTrace: bool = False
    tcpIdleTimeout: float = 7300.0
    maxBodySize: int = 60000
    advertisedAddress: str | None = None
    offlineBody: str = "closed"
    database: str = "sqlite:presence.sqlite"
    fallback2db: bool = False
    dbUpdatePeriod: float = 5.0
    cleanPeriod: float = 1.0
    createTables: bool = True
    dbConnections: int = 8
    nodeTimeout: float = 10.0
    serverId: str | None = None
    workers: int = 1
    dbStatementTimeout: float = 5.0
    minExpires: int | None = None
    maxExpires: int | None = None
    defaultExpires: int | None = None
    minExpiresPublish: int | None = None
    maxExpiresPublish: int | None = None
    defaultExpiresPublish: int | None = None
    registrarMinExpires: int | None = None
    registrarMaxExpires: int | None = None
    registrarDefaultExpires: int | None = None
    authentication: bool = False
    authAlgorithms: tuple[str, ...] = ("SHA-256", "MD5")
    authRealm: str | None = None
    nonceLifetime: int = 300
    nonceSecret: str | None = dataclasses.field(default=None, repr=False)
    trustedPeers: tuple[str, ...] = ()
    adminListen: str = DEFAULT_ADMIN_LISTEN
    adminUser: str = "admin"
    adminPassword: str | None = dataclasses.field(default=None, repr=False)
    forceActive: bool | None = None
    integratedXcapServer: bool = False
    xcapServer: tuple[str, ...] = ()
    periodicalQuery: bool = True
    queryPeriod: int = 100
    pidfManipulation: bool = False
    sourceRateLimit: float = 200.0
    maxSubscriptionsPerWatcher: int = 1000
    maxPublicationsPerPresentity: int = 32
    maxTcpConnections: int = 1000
    tcpReadTimeout: float = 10.0
    udpMtu: int = 1300
    tlsVerify: bool = False
    tlsCa: str | None = None

    @property
    def forceActiveInEffect(self) -> bool:
        """Whether every watcher is allowed: ``force_active``, or its default.

        Unset, it is true when no XCAP mode is set (no rules can be read)
        and false in the integrated mode.
        """
        if self.forceActive is not None:
            return self.forceActive
        return not (self.integratedXcapServer or self.xcapServer)

    @property
    def listenAddresses(self) -> list[ListenAddress]:
        """The listen descriptions, parsed."""
        return [parseListen(d) for d in self.listen]

    def validate(self) -> Config:
        """Check every setting; return ``self``.

        Raises:
            ConfigError: a setting is invalid.
        """
        if not self.listen:
            raise ConfigError("listen: at least one address is needed")
        for description in self.listen:
            if parseListen(description).transport == "tls":
                checkTLSListen(description)
        if self.tcpIdleTimeout <= 0:
            raise ConfigError("tcp_idle_timeout must be positive")
        databaseKind(self.database)
        if self.fallback2db and self.database == "memory":
            raise ConfigError("fallback2db needs a database, not memory")
        if not 1 <= self.dbConnections <= 100:
            raise ConfigError("db_connections must be between 1 and 100")
        if self.dbUpdatePeriod <= 0 or self.cleanPeriod <= 0:
            raise ConfigError("db_update_period and clean_period must be positive")
        if not 1 <= self.nodeTimeout <= 3600:
            raise ConfigError("node_timeout must be between 1 and 3600 seconds")
        if not 0 <= self.dbStatementTimeout <= 3600:
            raise ConfigError("db_statement_timeout must be between 0 and 3600")
        if self.serverId is not None and not (
            0 < len(self.serverId) <= 32
            and self.serverId.isascii()
            and self.serverId.isprintable()
            and " " not in self.serverId
        ):
            raise ConfigError(
                "server_id must be 1 to 32 printable ASCII characters, no spaces"
            )
        self._checkWorkers()
        if self.offlineBody not in ("closed", "empty"):
            raise ConfigError('offline_body must be "closed" or "empty"')
        if not 0 < self.maxBodySize <= 65535:
            raise ConfigError("max_body_size must be between 1 and 65535")
        if not 0 <= self.udpMtu <= 65535:
            raise ConfigError("udp_mtu must be between 0 (off) and 65535")
        checkAdminListen(self.adminListen)
        if self.tlsCa is not None:
            checkCertificateFile(self.tlsCa)
        if self.adminPassword is None and not adminIsLocal(self.adminListen):
            raise ConfigError(
                f"admin_listen {self.adminListen!r} is not a loopback address:"
                " set admin_password (and admin_user, default admin), or listen"
                ' on "tcp:8080:interface=127.0.0.1"'
            )
        if self.adminPassword is not None and not self.adminPassword:
            raise ConfigError("admin_password must not be empty")
        problems = (
            self._expiryProblems()
            + self._authProblems()
            + self._xcapProblems()
            + self._limitProblems()
        )
        if problems:
            raise ConfigError("; ".join(problems))
        return self

    def _checkWorkers(self) -> None:
        """``workers``: 1 to `MAX_WORKERS`; more than 1 in shared mode only.

        The processes of one machine share its work as members of one
        cluster, which needs shared mode (``fallback2db``) on PostgreSQL;
        their listening sockets are bound with ``SO_REUSEPORT``, which TLS
        listeners are not (see the README's "Shared mode: a cluster").
        """
        if not 1 <= self.workers <= MAX_WORKERS:
            raise ConfigError(f"workers must be between 1 and {MAX_WORKERS}")
        if self.workers == 1:
            return
        if not self.fallback2db or databaseKind(self.database) != "postgresql":
            raise ConfigError(
                "workers above 1 needs shared mode on PostgreSQL: set"
                ' fallback2db = true and database = "postgresql://...", or'
                " workers = 1"
            )
        if any(a.transport == "tls" for a in self.listenAddresses):
            raise ConfigError(
                "workers above 1 does not support tls: listeners; run one"
                " process (workers = 1) for TLS"
            )

    def _expiryProblems(self) -> list[str]:
        """What is wrong with the expiry settings, one sentence per problem.

        Each bound must be a whole number of seconds: a minimum 0 or more, a
        maximum and a default 1 or more. Of the bounds set in one group
        (SUBSCRIBE, PUBLISH, REGISTER), the minimum may not exceed the
        maximum and the default must lie between them. A 423 for SUBSCRIBE
        and REGISTER is only allowed below an hour (RFC 6665 section
        4.2.1.1, RFC 3261 section 10.3), so their minimum is at most 3600.
        """
        problems: list[str] = []
        for names, hourCap in _EXPIRY_GROUPS:
            values: dict[str, int] = {}
            for name, lowest in zip(names, (0, 1, 1), strict=True):
                value = getattr(self, _KEYS[name][0])
                if value is None:
                    continue
                if isinstance(value, bool) or not isinstance(value, int):
                    problems.append(
                        f"{name} must be a whole number of seconds, not {value!r}"
                    )
                elif value < lowest:
                    problems.append(f"{name} must be {lowest} or more, not {value}")
                else:
                    values[name] = value
            minName, maxName, defaultName = names
            minimum = values.get(minName)
            maximum = values.get(maxName)
            default = values.get(defaultName)
            if hourCap and minimum is not None and minimum > 3600:
                problems.append(
                    f"{minName} ({minimum}) must be at most 3600: a 423 is only"
                    " allowed for intervals shorter than an hour"
                )
            if minimum is not None and maximum is not None and minimum > maximum:
                problems.append(
                    f"{minName} ({minimum}) is above {maxName} ({maximum}):"
                    " the minimum cannot exceed the maximum"
                )
            if default is not None:
                if minimum is not None and default < minimum:
                    problems.append(
                        f"{defaultName} ({default}) is below {minName} ({minimum}):"
                        " the default must lie between the minimum and the maximum"
                    )
                if maximum is not None and default > maximum:
                    problems.append(
                        f"{defaultName} ({default}) is above {maxName} ({maximum}):"
                        " the default must lie between the minimum and the maximum"
                    )
        return problems

    def _authProblems(self) -> list[str]:
        """What is wrong with the authentication settings, one sentence each."""
        problems: list[str] = []
        if not self.authAlgorithms:
            problems.append("auth_algorithms must name at least one algorithm")
        for name in self.authAlgorithms:
            if name not in AUTH_ALGORITHMS:
                problems.append(
                    f"auth_algorithms: unknown algorithm {name!r}"
                    f" (known: {', '.join(AUTH_ALGORITHMS)})"
                )
        if len(set(self.authAlgorithms)) != len(self.authAlgorithms):
            problems.append("auth_algorithms names an algorithm twice")
        if self.authRealm is not None and (
            not self.authRealm or '"' in self.authRealm or "\\" in self.authRealm
        ):
            problems.append("auth_realm must be a non-empty string without quotes")
        if isinstance(self.nonceLifetime, bool) or not isinstance(
            self.nonceLifetime, int
        ):
            problems.append("nonce_lifetime must be a whole number of seconds")
        elif self.nonceLifetime < 1:
            problems.append("nonce_lifetime must be 1 or more")
        if self.nonceSecret is not None and len(self.nonceSecret) < 16:
            problems.append("nonce_secret must be at least 16 characters")
        for peer in self.trustedPeers:
            try:
                ipaddress.ip_network(peer, strict=False)
            except ValueError:
                problems.append(
                    f"trusted_peers: {peer!r} is not an IP address or network"
                )
        return problems

    def _xcapProblems(self) -> list[str]:
        """What is wrong with the privacy-rules settings, one sentence each.

        One mode at a time: ``integrated_xcap_server`` (rules in the
        ``xcap`` table), ``xcap_server`` (rules fetched over HTTP) or
        ``force_active = true`` (no rules); a mix would leave it unclear
        whose rules count, so it is refused rather than one silently
        winning.
        """
        problems: list[str] = []
        if self.integratedXcapServer and self.xcapServer:
            problems.append(
                "integrated_xcap_server and xcap_server are both set: rules come"
                " either from the xcap table (integrated) or from XCAP servers"
                " (external), choose one"
            )
        if self.forceActive and (self.integratedXcapServer or self.xcapServer):
            mode = (
                "integrated_xcap_server"
                if self.integratedXcapServer
                else ("xcap_server")
            )
            problems.append(
                f"force_active = true and {mode} are both set: force_active"
                " allows every watcher without reading any rules, so the"
                " rules would never count; remove one"
            )
        if self.pidfManipulation and not (self.integratedXcapServer or self.xcapServer):
            problems.append(
                "pidf_manipulation = true needs integrated_xcap_server or"
                " xcap_server: the hard state comes from XCAP"
            )
        for url in self.xcapServer:
            if not url.startswith(("http://", "https://")):
                problems.append(f"xcap_server: {url!r} is not an http(s) URL")
        if isinstance(self.queryPeriod, bool) or not isinstance(self.queryPeriod, int):
            problems.append("query_period must be a whole number of seconds")
        elif self.queryPeriod < 1:
            problems.append("query_period must be 1 or more")
        return problems

    def _limitProblems(self) -> list[str]:
        """What is wrong with the limits: each is 0 (off) or more."""
        problems: list[str] = []
        for name, attribute in _LIMITS:
            value = getattr(self, attribute)
            if value < 0:
                problems.append(f"{name} must be 0 (no limit) or more, not {value}")
        return problems

    def replace(self, **changes: Any) -> Config:
        """A copy with some settings changed."""
        return dataclasses.replace(self, **changes)


#: TOML key -> (attribute, converter).
_KEYS: dict[str, tuple[str, Any]] = {
    "listen": ("listen", lambda v: tuple(_strings("listen", v))),
    "domain": ("domains", lambda v: tuple(d.lower() for d in _strings("domain", v))),
    "domains": ("domains", lambda v: tuple(d.lower() for d in _strings("domains", v))),
    "sip_trace": ("sipTrace", lambda v: _bool("sip_trace", v)),
    "tcp_idle_timeout": (
        "tcpIdleTimeout",
        lambda v: float(_number("tcp_idle_timeout", v)),
    ),
    "max_body_size": ("maxBodySize", lambda v: int(_number("max_body_size", v))),
    "offline_body": ("offlineBody", lambda v: _string("offline_body", v)),
    "database": ("database", lambda v: _string("database", v)),
    "fallback2db": ("fallback2db", lambda v: _bool("fallback2db", v)),
    "db_update_period": (
        "dbUpdatePeriod",
        lambda v: float(_number("db_update_period", v)),
    ),
    "clean_period": ("cleanPeriod", lambda v: float(_number("clean_period", v))),
    "create_tables": ("createTables", lambda v: _bool("create_tables", v)),
    "db_connections": ("dbConnections", lambda v: int(_number("db_connections", v))),
    "node_timeout": ("nodeTimeout", lambda v: float(_number("node_timeout", v))),
    "server_id": ("serverId", lambda v: _string("server_id", v)),
    "workers": ("workers", lambda v: _count("workers", v)),
    "db_statement_timeout": (
        "dbStatementTimeout",
        lambda v: float(_number("db_statement_timeout", v)),
    ),
    "advertised_address": (
        "advertisedAddress",
        lambda v: _string("advertised_address", v),
    ),
    "min_expires": ("minExpires", lambda v: _seconds("min_expires", v)),
    "max_expires": ("maxExpires", lambda v: _seconds("max_expires", v)),
    "default_expires": ("defaultExpires", lambda v: _seconds("default_expires", v)),
    "min_expires_publish": (
        "minExpiresPublish",
        lambda v: _seconds("min_expires_publish", v),
    ),
    "max_expires_publish": (
        "maxExpiresPublish",
        lambda v: _seconds("max_expires_publish", v),
    ),
    "default_expires_publish": (
        "defaultExpiresPublish",
        lambda v: _seconds("default_expires_publish", v),
    ),
    "registrar_min_expires": (
        "registrarMinExpires",
        lambda v: _seconds("registrar_min_expires", v),
    ),
    "registrar_max_expires": (
        "registrarMaxExpires",
        lambda v: _seconds("registrar_max_expires", v),
    ),
    "registrar_default_expires": (
        "registrarDefaultExpires",
        lambda v: _seconds("registrar_default_expires", v),
    ),
    "authentication": ("authentication", lambda v: _bool("authentication", v)),
    "auth_algorithms": (
        "authAlgorithms",
        lambda v: tuple(_algorithm(a) for a in _strings("auth_algorithms", v)),
    ),
    "auth_realm": ("authRealm", lambda v: _string("auth_realm", v)),
    "nonce_lifetime": ("nonceLifetime", lambda v: _seconds("nonce_lifetime", v)),
    "nonce_secret": ("nonceSecret", lambda v: _string("nonce_secret", v)),
    "trusted_peers": (
        "trustedPeers",
        lambda v: tuple(_strings("trusted_peers", v)),
    ),
    "admin_listen": ("adminListen", lambda v: _string("admin_listen", v)),
    "admin_user": ("adminUser", lambda v: _string("admin_user", v)),
    "admin_password": ("adminPassword", lambda v: _string("admin_password", v)),
    "force_active": ("forceActive", lambda v: _bool("force_active", v)),
    "integrated_xcap_server": (
        "integratedXcapServer",
        lambda v: _bool("integrated_xcap_server", v),
    ),
    "xcap_server": ("xcapServer", lambda v: tuple(_strings("xcap_server", v))),
    "periodical_query": (
        "periodicalQuery",
        lambda v: _bool("periodical_query", v),
    ),
    "query_period": ("queryPeriod", lambda v: _seconds("query_period", v)),
    "pidf_manipulation": (
        "pidfManipulation",
        lambda v: _bool("pidf_manipulation", v),
    ),
    "source_rate_limit": (
        "sourceRateLimit",
        lambda v: float(_number("source_rate_limit", v)),
    ),
    "max_subscriptions_per_watcher": (
        "maxSubscriptionsPerWatcher",
        lambda v: _count("max_subscriptions_per_watcher", v),
    ),
    "max_publications_per_presentity": (
        "maxPublicationsPerPresentity",
        lambda v: _count("max_publications_per_presentity", v),
    ),
    "max_tcp_connections": (
        "maxTcpConnections",
        lambda v: _count("max_tcp_connections", v),
    ),
    "tcp_read_timeout": (
        "tcpReadTimeout",
        lambda v: float(_number("tcp_read_timeout", v)),
    ),
    "udp_mtu": ("udpMtu", lambda v: _count("udp_mtu", v)),
    "tls_verify": ("tlsVerify", lambda v: _bool("tls_verify", v)),
    "tls_ca": ("tlsCa", lambda v: _string("tls_ca", v)),
}

#: The most server processes ``workers`` may start.
MAX_WORKERS: Final = 64

#: The limits, by TOML name and attribute: each 0 (off) or more.
_LIMITS: Final = (
    ("source_rate_limit", "sourceRateLimit"),
    ("max_subscriptions_per_watcher", "maxSubscriptionsPerWatcher"),
    ("max_publications_per_presentity", "maxPublicationsPerPresentity"),
    ("max_tcp_connections", "maxTcpConnections"),
    ("tcp_read_timeout", "tcpReadTimeout"),
)

#: The digest algorithms ``auth_algorithms`` may name (RFC 8760 section 2.1),
#: as they are written in challenges.
AUTH_ALGORITHMS: Final = ("SHA-256", "SHA-512-256", "MD5")


def _algorithm(name: str) -> str:
    """An algorithm name as challenges write it, whatever its case."""
    for known in AUTH_ALGORITHMS:
        if name.upper() == known:
            return known
    return name


#: The expiry settings checked together: (minimum, maximum, default) names,
#: and whether the minimum is capped at an hour.
_EXPIRY_GROUPS: tuple[tuple[tuple[str, str, str], bool], ...] = (
    (("min_expires", "max_expires", "default_expires"), True),
    (
        ("min_expires_publish", "max_expires_publish", "default_expires_publish"),
        False,
    ),
    (
        (
            "registrar_min_expires",
            "registrar_max_expires",
            "registrar_default_expires",
        ),
        True,
    ),
)


def checkAdminListen(description: str) -> None:
    """Check an ``admin_listen`` setting: ``"none"`` or a server endpoint.

    Raises:
        ConfigError: Twisted cannot make an endpoint of it.
    """
    if description == "none":
        return
    from twisted.internet.endpoints import serverFromString

    try:
        # Only parsed: an endpoint listens when asked to, not when made.
        serverFromString(None, description)
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(
            f'admin_listen {description!r}: {e} (expected "none" or an endpoint'
            ' such as "tcp:8080:interface=127.0.0.1")'
        ) from None


def checkTLSListen(description: str) -> None:
    """Check that Twisted can listen with a ``tls:`` description's key and certificate.

    Twisted's ``ssl:`` parser reads the files when the description is parsed,
    so a missing or unreadable one is found here, before anything starts.

    Raises:
        ConfigError: Twisted cannot make an endpoint of it.
    """
    from twisted.internet.endpoints import serverFromString

    try:
        serverFromString(None, parseListen(description).endpointDescription())
    except Exception as e:  # files, PEM and OpenSSL errors: all "cannot listen"
        raise ConfigError(f"listen {description!r}: {e}") from None


def checkCertificateFile(path: str) -> None:
    """Check a ``tls_ca`` file: readable, with a PEM certificate in it.

    Raises:
        ConfigError: it cannot be read or holds no certificate.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(f"tls_ca {path!r}: {e.strerror}") from None
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise ConfigError(f"tls_ca {path!r}: no PEM certificate in the file")


def adminIsLocal(description: str) -> bool:
    """Whether an ``admin_listen`` setting is reachable only from this machine.

    ``"none"``, a ``unix:`` socket, or a ``tcp:``/``tcp6:`` endpoint whose
    ``interface`` is a loopback address. No interface means every one.
    """
    if description == "none":
        return True
    parts = _splitEndpoint(description.strip())
    kind = parts[0].lower()
    if kind == "unix":
        return True
    if kind not in ("tcp", "tcp6"):
        return False
    for part in parts[1:]:
        key, equals, value = part.partition("=")
        if equals and key == "interface":
            try:
                return ipaddress.ip_address(value.strip("[]")).is_loopback
            except ValueError:
                return value.lower() == "localhost"
    return False


def adminURL(description: str) -> str:
    """The XML-RPC URL of an administration site listening on ``description``.

    ``tcp:8080:interface=127.0.0.1`` -> ``http://127.0.0.1:8080/RPC2``; a site
    on every interface (no interface, ``0.0.0.0`` or ``::``) is reached on
    the loopback address.

    Raises:
        ConfigError: the description is ``"none"``, not a TCP endpoint, or has
            no port to reach.
    """
    parts = _splitEndpoint(description.strip())
    kind = parts[0].lower()
    if description == "none":
        raise ConfigError("admin_listen is none: the server has no administration site")
    if kind not in ("tcp", "tcp6"):
        raise ConfigError(
            f"admin_listen {description!r}: only a tcp: site can be reached"
        )
    port, interface = "", ""
    for part in parts[1:]:
        key, equals, value = part.partition("=")
        if not equals and not port:
            port = key
        elif key == "port":
            port = value
        elif key == "interface":
            interface = value
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"admin_listen {description!r}: no port to reach")
    host = interface or ("::1" if kind == "tcp6" else "127.0.0.1")
    if host == "0.0.0.0":
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{int(port)}/RPC2"


def databaseKind(url: str) -> str:
    """``"memory"``, ``"sqlite"`` or ``"postgresql"``, from a database setting.

    Raises:
        ConfigError: the setting names no database this server knows.
    """
    if url == "memory":
        return "memory"
    if url.startswith("sqlite:") and len(url) > len("sqlite:"):
        return "sqlite"
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql"
    raise ConfigError(
        f"database {url!r}: expected memory, sqlite:PATH or postgresql://..."
    )


def sqlitePath(url: str) -> str:
    """The file of a ``sqlite:`` setting: ``sqlite:rel`` or ``sqlite:///abs``."""
    rest = url[len("sqlite:") :]
    if rest.startswith("///"):
        return "/" + rest[3:]
    if rest.startswith("//"):
        return rest[2:]
    return rest


def _strings(key: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise ConfigError(f"{key}: expected a string or a list of strings")


def _string(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string")
    return value


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false")
    return value


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key}: expected a number")
    return value


def _count(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: expected a whole number")
    return value


def _seconds(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: expected a whole number of seconds")
    return value


def fromMapping(data: Mapping[str, Any], base: Config | None = None) -> Config:
    """Build a configuration from TOML-style keys on top of ``base``.

    Raises:
        ConfigError: an unknown key, or a value of the wrong type.
    """
    changes: dict[str, Any] = {}
    for key, value in data.items():
        known = _KEYS.get(key)
        if known is None:
            raise ConfigError(f"unknown setting {key!r}")
        attribute, convert = known
        changes[attribute] = convert(value)
    return (base or Config()).replace(**changes)


def loadFile(path: str) -> Config:
    """Read a TOML configuration file.

    Raises:
        ConfigError: the file cannot be read or is invalid.
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    return fromMapping(data)
