"""Shared mode as a cluster: several servers on one PostgreSQL as one notifier.

Each subscription is owned by one server, named in its ``sharing_tag``: the
one that received its last SUBSCRIBE. Only the owner sends its NOTIFYs and
expires it. A server that changes what an owner's watchers see tells that
owner through PostgreSQL ``LISTEN``/``NOTIFY`` (`presence.cluster.member`),
and each member keeps a heartbeat row in the ``cluster`` table; the
subscriptions of a member silent for ``node_timeout`` seconds are taken over
by a survivor. There is no bus but the database.

This package sits above `presence.storage` (it runs its statements through
the PostgreSQL store) and below `presence.core`, which it never imports: the
notifier is handed to it as callbacks by `presence.stack`.
"""
