"""The server's objects, built and wired together: `buildStack`.

The transports, the transaction layer, the store, the event packages, the
presence core and the dispatcher, each given its collaborators when it is
built. Nothing here listens or starts: the service maker (`presence.tap`)
does that, and the in-memory server of `presence.testing` builds the same
stack on fake transports.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from twisted.web.server import Site

from presence.admin import ServerStatistics, adminSite
from presence.auth.check import DigestAuthenticator, IdentityCheck
from presence.auth.identity import TrustedPeers
from presence.config import Config, databaseKind, sqlitePath
from presence.core.authorise import Reauthoriser, ReauthoriseResult
from presence.core.dispatcher import SERVER, Dispatcher, Handler, RequestCheck
from presence.core.expiry import ExpirySweeper
from presence.core.expirypolicy import (
    ExpiryOverrides,
    ExpiryPolicy,
    publishExpires,
    subscribeExpires,
)
from presence.core.limits import (
    PublicationLimit,
    SourceRateLimit,
    SubscriptionLimit,
    WatcherCounts,
)
from presence.core.notify import Notifier, NotifyStatistics, aorOf
from presence.core.publish import PublishHandler
from presence.core.registrar import REGISTRAR_EXPIRES, Registrar
from presence.core.statistics import RequestStatistics
from presence.core.subscribe import SubscribeHandler
from presence.core.watchers import WatcherTracker
from presence.core.xcapdiff import XCAPDiffPublish
from presence.packages.dialog import DialogPackage, SharedLineDialogPackage
from presence.packages.interfaces import PackageRegistry
from presence.packages.mwi import MessageSummaryPackage
from presence.packages.presence import PresencePackage
from presence.packages.winfo import WatcherInfoPackage
from presence.sip.limits import LimitStatistics
from presence.sip.resolver import LazyResolver
from presence.sip.tls import clientTLS
from presence.sip.transaction import TransactionLayer
from presence.sip.transport import SIPTransports
from presence.storage.cached import CachedStore
from presence.storage.credentials import (
    CachingCredentialStore,
    ICredentialStore,
    MemoryCredentialStore,
    SQLCredentialStore,
)
from presence.storage.interfaces import IPresenceStore
from presence.storage.memory import MemoryStore
from presence.storage.service import CACHE, MEMORY, SHARED, StorageService
from presence.storage.statistics import StorageStatistics
from presence.storage.xcap import IXCAPStore, MemoryXCAPStore, SQLXCAPStore
from presence.xcap.client import FETCH_TIMEOUT, FetchingXCAPStore, XCAPClient
from presence.xcap.integrated import HardStateReader, RulesPolicy, RulesWatch
from presence.xcap.policy import AllowAll, IPrivacyPolicy
from presence.xcap.transform import newestSphere


@dataclass
class Stack:
    """The SIP stack and what sits on it, wired together."""

    config: Config
    transports: SIPTransports
    transactions: TransactionLayer
    dispatcher: Dispatcher
    store: IPresenceStore
    storage: StorageService
    packages: PackageRegistry
    notifier: Notifier
    subscribe: SubscribeHandler
    publish: PublishHandler
    registrar: Registrar
    sweeper: ExpirySweeper
    statistics: ServerStatistics
    admin: Site
    reactor: Any
    credentials: ICredentialStore | None = None
    authenticator: DigestAuthenticator | None = None
    policy: IPrivacyPolicy | None = None
    xcap: IXCAPStore | None = None
    reauthoriser: Reauthoriser | None = None
    xcapClient: XCAPClient | None = None
    rulesWatch: RulesWatch | None = None
    #: The cluster member in shared mode on PostgreSQL
    #: (`presence.cluster.member.ClusterMember`), else ``None``.
    cluster: Any = None

    async def reauthorise(
        self, presentity: str, event: str = "presence"
    ) -> ReauthoriseResult:
        """Re-authorise this presentity's watchers and notify the changes.

        The operation behind ``refreshWatchers``, xcap-diff and the periodic
        check (`presence.core.authorise.Reauthoriser.reauthorise`).
        """
        assert self.reauthoriser is not None
        return await self.reauthoriser.reauthorise(presentity, event)

    limits: LimitStatistics | None = None
    rateLimit: SourceRateLimit | None = None


def buildStack(
    config: Config, reactor: Any, databaseReactor: Any | None = None
) -> Stack:
    """Build the server the configuration describes, on ``reactor``.

    ``databaseReactor``, when given, is what the PostgreSQL connections run
    on instead (tests run a server on a fake clock over a real database).

    Every object is given its collaborators and callbacks when it is built.
    The administration site (`presence.admin`) reads the counters of every
    layer through `ServerStatistics`; ``presence.tap`` listens with it.

    Three links close a loop and so are made late: in shared mode on
    PostgreSQL the cluster member calls the notifier, which signals through
    it (``notifier.cluster``); the notifier tells the
    watcher tracker of the subscriptions it removes, and the tracker notifies
    through the notifier (the callback looks the tracker up when called); the
    transaction layer hands requests to the dispatcher, whose handlers send
    NOTIFYs through the transaction layer (the dispatcher becomes the layer's
    user once it is built).
    """
    limits = LimitStatistics()
    transports = SIPTransports(
        clock=reactor,
        reactor=reactor,
        resolver=LazyResolver(reactor),
        idleTimeout=config.tcpIdleTimeout,
        trace=config.sipTrace,
        advertisedHost=config.advertisedAddress,
        maxConnections=config.maxTcpConnections or None,
        readTimeout=config.tcpReadTimeout or None,
        limitStats=limits,
        clientTLS=clientTLS(config.tlsVerify, config.tlsCa),
        udpMtu=config.udpMtu or None,
    )
    transactions = TransactionLayer(reactor, transports, serverHeader=SERVER)
    store, storage = buildStore(config, reactor, StorageStatistics(), databaseReactor)
    xcap, policy = buildPolicy(config, reactor, store, storage)
    # What adds and removes subscriptions sees a store counting each
    # watcher's, when their number is limited.
    counted: WatcherCounts | None = None
    subscriptions: IPresenceStore = store
    if config.maxSubscriptionsPerWatcher:
        subscriptions = counted = WatcherCounts(store)
    xcapClient = xcap.client if isinstance(xcap, FetchingXCAPStore) else None
    # pidf_manipulation: the users' hard state, aggregated with what they
    # publish (RFC 4827).
    hardState = (
        HardStateReader(xcap) if xcap is not None and config.pidfManipulation else None
    )
    presencePackage = PresencePackage(offline=config.offlineBody, hardState=hardState)
    if hardState is not None and isinstance(policy, RulesPolicy):
        # A sphere set in the hard state counts as a published one.
        policy.sphere = sphereReader(store, presencePackage)
    packages = PackageRegistry(
        [
            presencePackage,
            WatcherInfoPackage(reactor, store),
            MessageSummaryPackage(),
            DialogPackage(),
            SharedLineDialogPackage(),
        ]
    )
    notifier = Notifier(
        reactor,
        subscriptions,
        packages,
        transactions,
        transports,
        onRemoved=lambda s, why: watchers.changed(s, "deactivated"),
        stats=NotifyStatistics(),
        policy=None if isinstance(policy, AllowAll) else policy,
    )
    cluster = buildCluster(config, reactor, storage, notifier)
    if cluster is not None:
        # The store serves once the member listens: no signal is lost.
        notifier.cluster = cluster
        storage.onOpen = cluster.join
    watchers = WatcherTracker(reactor, store, packages, notifier)
    subscribe = SubscribeHandler(
        reactor,
        subscriptions,
        packages,
        policy,
        notifier,
        transports,
        config.domains,
        onWatcherChange=watchers.changed,
        expiry=ExpiryPolicy(
            subscribeExpires,
            ExpiryOverrides(
                default=config.defaultExpires,
                minimum=config.minExpires,
                maximum=config.maxExpires,
            ),
            packages,
        ),
        owner=None if cluster is None else cluster.serverId,
    )
    publish = PublishHandler(
        reactor,
        store,
        packages,
        notifier,
        config.domains,
        onPublished=None
        if xcap is None
        else lambda presentity, event: reauthoriser.published(presentity, event),
        expiry=ExpiryPolicy(
            publishExpires,
            ExpiryOverrides(
                default=config.defaultExpiresPublish,
                minimum=config.minExpiresPublish,
                maximum=config.maxExpiresPublish,
            ),
            packages,
        ),
    )
    registration = ExpiryOverrides(
        default=config.registrarDefaultExpires,
        minimum=config.registrarMinExpires,
        maximum=config.registrarMaxExpires,
    ).apply(REGISTRAR_EXPIRES)
    registrar = Registrar(
        reactor,
        store,
        config.domains,
        defaultExpires=registration.default,
        minExpires=registration.minimum,
        maxExpires=registration.maximum,
    )
    sweeper = ExpirySweeper(
        reactor,
        subscriptions,
        notifier,
        interval=config.cleanPeriod,
        onSubscriptionExpired=lambda s: watchers.changed(s, "timeout"),
        # The expired publication may have carried the sphere the rules read.
        onPublicationExpired=None
        if xcap is None
        else lambda presentity, event: reauthoriser.published(presentity, event),
    )
    reauthoriser = Reauthoriser(
        reactor,
        subscriptions,
        packages,
        policy,
        notifier,
        onWatcherChange=watchers.changed,
    )
    credentials = buildCredentials(reactor, storage)
    authenticator, identityChecks = buildChecks(config, reactor, credentials)
    checks: list[RequestCheck] = list(identityChecks)
    rateLimit = None
    if config.sourceRateLimit:
        # The dispatcher's gate, before anything else: a flood costs no
        # header checks and no digest verification, and malformed requests
        # are limited too.
        rateLimit = SourceRateLimit(
            reactor,
            config.sourceRateLimit,
            limits,
            TrustedPeers(config.trustedPeers),
        )
    subscribeHandler: Handler = subscribe
    if counted is not None:
        subscribeHandler = SubscriptionLimit(
            subscribe, counted, config.maxSubscriptionsPerWatcher, limits
        )
    publishHandler: Handler = publish
    if config.maxPublicationsPerPresentity:
        publishHandler = PublicationLimit(
            publish, config.maxPublicationsPerPresentity, limits
        )
    if xcap is not None:
        # The integrated mode hears of rules changes through xcap-diff
        # (which creates no publication, so it is not limited).
        publishHandler = XCAPDiffPublish(
            publishHandler,
            reauthoriser,
            config.domains,
            fetch=None if xcapClient is None else xcapClient.fetchUser,
        )
    dispatcher = Dispatcher(
        {
            "SUBSCRIBE": subscribeHandler,
            "PUBLISH": publishHandler,
            "REGISTER": registrar,
        },
        packages,
        ready=lambda: storage.serving,
        checks=checks,
        maxBodySize=config.maxBodySize,
        stats=RequestStatistics(),
        gate=rateLimit,
    )
    transactions.user = dispatcher
    statistics = ServerStatistics(
        transports,
        transactions,
        dispatcher.stats,
        notifier,
        storage,
        store,
        limits=limits,
        xcapFetches=lambda: 0 if xcapClient is None else xcapClient.fetches,
        cluster=cluster,
    )
    rulesChanged = None
    if xcap is not None:

        async def rulesChanged(presentity: str, event: str) -> tuple[int, int]:
            result = await reauthoriser.reauthorise(presentity, event)
            return result.subscriptions, result.changed

    refreshDocument = None
    if xcapClient is not None:

        async def documentsChanged(presentity: str) -> None:
            await reauthoriser.reauthorise(presentity, "presence")

        xcapClient.onChanged = documentsChanged
        refreshDocument = xcapClient.refresh
    rulesWatch = None
    # What the periodic check reads the table through: the policy's own store
    # in the integrated mode (None), the table itself in the external mode
    # in shared storage.
    watchDocuments: IXCAPStore | None = None
    watched = config.integratedXcapServer and isinstance(policy, RulesPolicy)
    if (
        not watched
        and xcapClient is not None
        and isinstance(xcap, FetchingXCAPStore)
        and isinstance(policy, RulesPolicy)
        and storage.mode == SHARED
    ):
        # The external mode in shared storage: the servers share the table,
        # and a server's conditional fetch finds the entity tag another
        # server stored (304): it would never hear of the change. What each
        # server holds (the rules and the hard state) is compared with the
        # table every query_period, as in the integrated mode.
        watched = True
        watchDocuments = xcap.store
    if watched and isinstance(policy, RulesPolicy):
        # An XCAP server need not signal a change (OpenXCAP 2.x never signals
        # a DELETE): the table is checked every query_period.
        rulesWatch = RulesWatch(
            reactor,
            policy,
            lambda presentity: reauthoriser.reauthorise(presentity, "presence"),
            config.queryPeriod,
            hardState=hardState,
            documents=watchDocuments,
        )
    admin = adminSite(
        statistics,
        store,
        notifier,
        packages,
        reactor,
        rulesChanged,
        credentials=None
        if config.adminPassword is None
        else (config.adminUser, config.adminPassword),
        refreshDocument=refreshDocument,
        refreshState=None if hardState is None else reauthoriser.refreshState,
    )
    return Stack(
        config=config,
        transports=transports,
        transactions=transactions,
        dispatcher=dispatcher,
        store=store,
        storage=storage,
        packages=packages,
        notifier=notifier,
        subscribe=subscribe,
        publish=publish,
        registrar=registrar,
        sweeper=sweeper,
        statistics=statistics,
        admin=admin,
        reactor=reactor,
        credentials=credentials,
        authenticator=authenticator,
        policy=policy,
        xcap=xcap,
        reauthoriser=reauthoriser,
        limits=limits,
        rateLimit=rateLimit,
        xcapClient=xcapClient,
        rulesWatch=rulesWatch,
        cluster=cluster,
    )


def serverIdOf(config: Config) -> str:
    """This server's id in a cluster: ``server_id``, or ``host:port``.

    The default is the host name's first label and the first listening
    port (`presence.cluster.member.defaultServerId`): stable across
    restarts, distinct for two servers on one machine.
    """
    if config.serverId is not None:
        return config.serverId
    from presence.cluster.member import defaultServerId

    addresses = config.listenAddresses
    port = addresses[0].port if addresses else 5060
    return defaultServerId(socket.gethostname(), port, secrets.token_hex(4))


def buildCluster(
    config: Config, reactor: Any, storage: StorageService, notifier: Notifier
) -> Any:
    """The cluster member of shared mode on PostgreSQL, or ``None``.

    Its callbacks are the notifier's, which becomes its `ClusterLink
    <presence.core.notify.ClusterLink>` (`buildStack` sets it). The store
    learns the server id: it claims NOTIFYs and expires subscriptions for
    this server only.
    """
    database = storage.database
    if storage.mode != SHARED or getattr(database, "dialect", None) != "postgres":
        return None
    from presence.cluster.member import ClusterMember

    serverId = serverIdOf(config)
    database.owner = serverId

    async def resync() -> None:
        await notifier.resend(await database.ownedSubscriptions())

    return ClusterMember(
        reactor,
        database,
        serverId,
        f"{socket.gethostname()} {' '.join(config.listen)}"[:255],
        config.nodeTimeout,
        onPresentity=lambda p, e: notifier.presentityChanged(p, e, signal=False),
        onSubscription=notifier.remoteSubscription,
        onTakenOver=notifier.resend,
        onResync=resync,
        createTables=config.createTables,
    )


def buildPolicy(
    config: Config, reactor: Any, store: IPresenceStore, storage: StorageService
) -> tuple[IXCAPStore | None, IPrivacyPolicy]:
    """The privacy policy, and the XCAP documents it reads.

    ``force_active`` (the default without an XCAP mode): `AllowAll`, no
    documents. The integrated mode: a `RulesPolicy` over the database's
    ``xcap`` table, read directly in cache and in shared mode alike (an XCAP
    server writes it), or over memory in memory mode. ``force_active =
    false`` without an XCAP mode reads rules from nowhere: every watcher
    waits (pending), as OpenSIPS does. The external mode (``xcap_server``):
    the same policy over a `FetchingXCAPStore`, whose `XCAPClient` fetches
    the documents into the table (the database's, or memory's); its
    ``onChanged`` is set by `buildStack` once the re-authoriser exists.
    """
    if config.forceActiveInEffect:
        return None, AllowAll()
    documents: IXCAPStore
    if (
        config.integratedXcapServer or config.xcapServer
    ) and storage.database is not None:
        documents = SQLXCAPStore(storage.database)
    else:
        documents = MemoryXCAPStore()
    if config.xcapServer:
        from treq.client import HTTPClient
        from twisted.web.client import Agent

        client = XCAPClient(
            reactor,
            HTTPClient(Agent(reactor, connectTimeout=FETCH_TIMEOUT)),
            documents,
            config.xcapServer,
            periodical=config.periodicalQuery,
            period=config.queryPeriod,
            hardState=config.pidfManipulation,
        )
        documents = FetchingXCAPStore(documents, client)

    async def sphere(presentity: str) -> str | None:
        publications = await store.publications(aorOf(presentity), "presence")
        return newestSphere([p.body for p in publications])

    return documents, RulesPolicy(reactor, documents, sphere=sphere)


def sphereReader(
    store: IPresenceStore, package: PresencePackage
) -> Callable[[str], Awaitable[str | None]]:
    """Reads a presentity's current sphere, the hard state's included.

    With ``pidf_manipulation`` a sphere the user set by XCAP counts while no
    publication has one (`PresencePackage.sphere`).
    """

    async def sphere(presentity: str) -> str | None:
        publications = await store.publications(aorOf(presentity), "presence")
        return await package.sphere(presentity, publications)

    return sphere


def buildCredentials(reactor: Any, storage: StorageService) -> ICredentialStore:
    """Where digest authentication reads users' credentials.

    In memory mode, a `MemoryCredentialStore`. With a database, in cache and
    shared mode alike, its ``subscriber`` table read directly, each answer
    kept a few seconds (`CachingCredentialStore`): users are provisioned in
    the database (``presence-ctl user``), and a change takes effect within
    that time without a restart.
    """
    if storage.database is None:
        return MemoryCredentialStore()
    return CachingCredentialStore(SQLCredentialStore(storage.database), reactor)


def buildChecks(
    config: Config, reactor: Any, credentials: ICredentialStore
) -> tuple[DigestAuthenticator | None, list[IdentityCheck]]:
    """The request checks run after readiness: who sent a request.

    None unless ``authentication`` is on or peers are trusted. A
    ``nonce_secret`` left unset is random for the life of the process.

    Returns:
        The digest authenticator (``None`` with authentication off) and the
        checks to give the dispatcher.
    """
    trusted = TrustedPeers(config.trustedPeers)
    if not config.authentication and not trusted:
        return None, []
    authenticator = None
    if config.authentication:
        secret = (
            config.nonceSecret.encode("utf-8")
            if config.nonceSecret is not None
            else secrets.token_bytes(32)
        )
        authenticator = DigestAuthenticator(
            reactor,
            credentials,
            secret,
            algorithms=config.authAlgorithms,
            realm=config.authRealm,
            nonceLifetime=config.nonceLifetime,
        )
    return authenticator, [IdentityCheck(trusted, authenticator)]


def buildStore(
    config: Config,
    reactor: Any,
    stats: StorageStatistics | None = None,
    databaseReactor: Any | None = None,
) -> tuple[IPresenceStore, StorageService]:
    """The store the configuration asks for, and the service that runs it.

    Args:
        config: the configuration.
        reactor: what the store runs on.
        stats: the counters the database and the service raise.
        databaseReactor: what PostgreSQL connections run on, if not
            ``reactor``.
    """
    stats = stats if stats is not None else StorageStatistics()
    kind = databaseKind(config.database)
    if kind == "memory":
        memory = MemoryStore()
        return memory, StorageService(reactor, MEMORY, memory, stats=stats)
    database: Any
    if kind == "sqlite":
        from presence.storage.sqlite import SQLiteStore

        path = sqlitePath(config.database)
        database = SQLiteStore(path, reactor=reactor, stats=stats)
        description = f"sqlite:{path}"
    else:
        from presence.storage.postgres import PostgresStore

        database = PostgresStore(
            config.database,
            reactor=reactor if databaseReactor is None else databaseReactor,
            connections=config.dbConnections,
            stats=stats,
            statementTimeout=config.dbStatementTimeout,
        )
        description = _withoutPassword(config.database)
    store: IPresenceStore
    if config.fallback2db:
        store, mode = database, SHARED
    else:
        store, mode = CachedStore(database), CACHE
    service = StorageService(
        reactor,
        mode,
        store,
        database,
        flushPeriod=config.dbUpdatePeriod,
        createTables=config.createTables,
        description=description,
        stats=stats,
    )
    return store, service


def _withoutPassword(url: str) -> str:
    """A database URL fit for a log line."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    return f"{scheme}{sep}{userinfo}{at}{host}"
