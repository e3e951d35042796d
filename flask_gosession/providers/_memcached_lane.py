"""A fast lane for the memcached provider's two per-request commands.

pymemcache (4.x) wraps every call of a :class:`~pymemcache.client.base.PooledClient`
in a generator-based context manager, validates and re-encodes the key,
runs the value through its serde and builds dictionaries for a single
key. For a session store, whose request is one ``gets`` (a read) or a
``gets`` and a ``cas`` (a write), that is a few microseconds of CPU per
command, as much as Flask-Session's whole ``noreply`` write.
:class:`CasLane` sends ``gets`` and ``cas`` on the pool's own
:class:`~pymemcache.client.base.Client` objects (so connecting, timeouts
and TCP options stay pymemcache's) and reads the replies with pymemcache's
own line and value readers.

Contract:

* Keys are the provider's store keys, already known to be valid
  memcached keys (the prefix is checked by ``from_config``, the rest is 64
  hex digits); values are bytes, stored with flags 0 as the client's other
  writes store them (the ``PooledClient`` has no key prefix or serde of
  its own). The methods take pymemcache's arguments, so the provider calls
  either the same way.
* An error reply raises pymemcache's exception for it
  (:class:`~pymemcache.exceptions.MemcacheServerError` ...), a closed
  connection :class:`~pymemcache.exceptions.MemcacheUnexpectedCloseError`,
  and a timeout or socket error its ``OSError``: the same exceptions the
  client raises, so the provider's handling is the same on either path.
* Any exception discards the connection, so a reply can never be read by
  the wrong command; a connection is kept for reuse only after a complete
  exchange. A lost connection is not retried here: the provider retries
  once, as for its other calls.
* Idle connections, built by the ``PooledClient``'s own factory, are kept
  as :mod:`._idle` keeps them: no lock, at most as many as there were
  concurrent calls, none after ``fork()``.
"""
from __future__ import annotations

import typing as t

from ._idle import IdleConnections

#: Bytes asked of the socket per read (pymemcache's own size).
_RECV_SIZE = 4096


class CasLane:
    """``gets`` and ``cas`` on the connections of one ``PooledClient``.

    :param pooled: the :class:`~pymemcache.client.base.PooledClient`.
    """

    def __init__(self, pooled: t.Any) -> None:
        from pymemcache.client import base
        from pymemcache.exceptions import MemcacheUnexpectedCloseError, MemcacheUnknownError

        #: The client whose connection settings this lane uses.
        self.pooled = pooled
        self._idle = IdleConnections(pooled._create_client)
        self._readline = base._readline
        self._readvalue = base._readvalue
        self._unknown = MemcacheUnknownError
        self._closed = MemcacheUnexpectedCloseError

    def _exchange(self, command: bytes, reply: t.Callable[[t.Any, t.Any], t.Any]) -> t.Any:
        """Send ``command`` on an idle connection and return ``reply(client, sock)``."""
        client = self._idle.take()
        try:
            sock = client.sock
            if sock is None:
                client._connect()
                sock = client.sock
            sock.sendall(command)
            result = reply(client, sock)
        except BaseException:
            client.close()  # the exchange may be half done
            raise
        self._idle.put(client)
        return result

    def close(self) -> None:
        """Close every idle connection. The lane stays usable."""
        for client in self._idle.drain():
            client.close()

    def gets(self, key: str) -> tuple[bytes | None, bytes | None]:
        """``(value, cas id)`` of ``key``, or ``(None, None)`` if it is
        missing: pymemcache's ``gets``."""
        return t.cast("tuple[bytes | None, bytes | None]",
                      self._exchange(b"gets " + key.encode() + b"\r\n", self._gets_reply))

    def _gets_reply(self, client: t.Any, sock: t.Any) -> tuple[bytes | None, bytes | None]:
        buf = sock.recv(_RECV_SIZE)
        if buf == b"END\r\n":
            return None, None
        # The whole reply in one read, as a session's usually is:
        # ``VALUE <key> <flags> <bytes> <cas>\r\n<data>\r\nEND\r\n``.
        head = buf.find(b"\r\n")
        if buf.startswith(b"VALUE ") and buf.endswith(b"\r\nEND\r\n"):
            parts = buf[:head].split()
            if len(parts) == 5 and head + int(parts[3]) + 9 == len(buf):
                return buf[head + 2:-7], parts[4]
        if not buf:
            raise self._closed()
        buf, line = self._readline(sock, buf)
        if line.startswith(b"VALUE "):
            parts = line.split()
            if len(parts) == 5:
                buf, value = self._readvalue(sock, buf, int(parts[3]))
                buf, end = self._readline(sock, buf)
                if end == b"END" and not buf:
                    return value, parts[4]
        client._raise_errors(line, b"gets")
        raise self._unknown(line[:64])

    def cas(self, key: str, value: bytes, cas: bytes, expire: int = 0) -> bool | None:
        """Store ``value`` if ``key`` still has the cas id ``cas``:
        pymemcache's ``cas`` (never ``noreply``).

        :returns: ``True`` if stored, ``False`` if the item changed since
            (``EXISTS``), ``None`` if it is gone (``NOT_FOUND``).
        """
        command = b"cas %b 0 %d %d %b\r\n%b\r\n" % (
            key.encode(), expire, len(value), cas, value)
        return t.cast("bool | None", self._exchange(command, self._cas_reply))

    def _cas_reply(self, client: t.Any, sock: t.Any) -> bool | None:
        buf = sock.recv(_RECV_SIZE)
        if buf == b"STORED\r\n":
            return True
        if not buf:
            raise self._closed()
        buf, line = self._readline(sock, buf)
        if not buf:
            if line == b"STORED":
                return True
            if line == b"EXISTS":
                return False
            if line == b"NOT_FOUND":
                return None
        client._raise_errors(line, b"cas")
        raise self._unknown(line[:64])
