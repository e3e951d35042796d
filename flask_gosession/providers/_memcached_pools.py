"""The pooled connections of a memcached provider's pymemcache client:
dropped when the server closed them, forgotten in a forked child.

The client is a :class:`~pymemcache.client.base.PooledClient`, a
:class:`~pymemcache.client.hash.HashClient` of them (``use_pooling``), or
a plain :class:`~pymemcache.client.base.Client`. pymemcache (4.x) keeps
one idle connection per past concurrent call in each
:class:`~pymemcache.pool.ObjectPool` and has no way to drop only the idle
ones, nor any notion of ``fork()``; both functions here work on the pool's
own deques and lock.

Contract:

* :func:`drop_idle` closes every *idle* connection of every server, so the
  next call connects afresh. Connections in use by other threads are left
  to them: pymemcache destroys one that fails and hands back one whose
  exchange completed.
* :func:`forget_inherited`, run in a child right after ``fork()``, gives
  every pool a new empty state and a new lock (the parent's may have been
  held by another thread at the fork), and closes the child's descriptors
  of the inherited connections without sending anything on them: the
  parent still holds each socket, so closing one descriptor of it is no
  ``FIN`` and no command. The parent's use of its connections is not
  disturbed and the child's first call connects afresh.
"""
from __future__ import annotations

import collections
import threading
import typing as t


def _members(client: t.Any) -> list[t.Any]:
    """The per-server clients of ``client``: a HashClient's, or itself."""
    clients = getattr(client, "clients", None)
    return list(clients.values()) if isinstance(clients, dict) else [client]


def drop_idle(client: t.Any) -> None:
    """Close every idle connection of ``client``, on every server."""
    for member in _members(client):
        pool = getattr(member, "client_pool", None)
        if pool is None:  # a plain Client: its one connection
            member.close()
            continue
        with pool._lock:
            idle = list(pool._free_objs)
            pool._free_objs.clear()
        for connection in idle:
            connection.close()


def forget_inherited(client: t.Any) -> None:
    """In a child just forked: start ``client``'s pools empty (see the module docs)."""
    for member in _members(client):
        pool = getattr(member, "client_pool", None)
        if pool is None:
            inherited = [member]
        else:
            inherited = [*pool._free_objs, *pool._used_objs]
            pool._lock = threading.Lock()  # pymemcache's default lock
            pool._free_objs = collections.deque()
            pool._used_objs = collections.deque()
        for connection in inherited:
            connection.close()  # the child's descriptor only: nothing is sent
