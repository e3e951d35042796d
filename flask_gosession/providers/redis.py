"""Redis store: one hash per session, expired natively by Redis.

Storage layout
--------------

Each record lives in one Redis *hash* at ``GOSESSION_KEY_PREFIX + key``:

``d:<user key>``
    one field per user key; the value is the tagged value encoded with the
    manager's serializer (``serializer.dumps(value)``);
``m:<meta key>``
    one field per internal meta field, encoded the same way;
``a``
    the last access time, as the decimal text of a float;
``s``
    the record's size: the bytes of every ``d:`` and ``m:`` field's name
    and value, kept up to date by the write scripts (a hash written before
    this field existed gets it on its next update).

Fields other than these are ignored on read, so a later version can add
some.

The per-user index of a user (see :mod:`flask_gosession.userindex`) is one
more hash, at ``GOSESSION_KEY_PREFIX + "u:" + <user key>`` (the user key is
the SHA-256 hex of the user id): one field per session, named by the
session's store key, whose value is the entry's JSON
(:meth:`~flask_gosession.userindex.IndexEntry.to_json`). Its native expiry
is its latest horizon (``PEXPIRE`` of that horizon minus the writer's
``now``, so the app's clock decides, as it does for the horizons, and a
clock that is not the server's does not matter); it is deleted when it is
left empty. Session keys are exactly 64 hex digits after the prefix, index
keys are not, so :meth:`RedisProvider.session_count` counts only the
sessions. Because values are stored per key, an update only sends and writes
the keys that changed: two requests changing different keys never overwrite
each other, with no read-modify-write cycle on the client.

The hash carries a native TTL of :attr:`~Provider.max_lifetime` seconds,
renewed by every write, read and touch, so Redis drops idle sessions itself
and :meth:`RedisProvider.session_gc` has nothing to do.

Size
----

A record is at most ``GOSESSION_MAX_RECORD_SIZE`` bytes (the ``s`` field;
default 1 MiB; ``None`` for no cap, the default when built by hand), and
no value may exceed Redis's own limit of 512 MB (:data:`MAX_VALUE_SIZE`).
A write over either raises :class:`~flask_gosession.errors.RecordTooLarge`
and changes nothing: ``session_init`` knows the whole record and checks it
before sending; ``session_update`` checks what it sends, and the update
script checks the total against ``s`` before it writes, in the same atomic
step, at the cost of one ``HSTRLEN`` per changed field.

Round trips and atomicity
-------------------------

A read is one plain ``HGETALL``, the cheapest command that returns a whole
hash. Every write is one Lua script (``EVALSHA``; a ``NOSCRIPT`` reply, for
example after a server restart, loads the script again), so it is atomic
and costs one round trip. Each command touches a single key, which is what
Redis Cluster requires.

The index is changed by one script too (:data:`INDEX_SCRIPT`, one key):
it decodes the hash, runs :func:`~flask_gosession.userindex.apply_write`'s
algorithm (pruning by horizon, the removals, the per-handle rule, the limit
with eviction or refusal), writes back only the fields that changed and
sets the expiry, so every decision is atomic with the write, in one round
trip. :meth:`RedisProvider.index_read` is the same script with no change (it
prunes), and :meth:`RedisProvider.session_peek` sends one ``HGETALL`` per
session in one pipeline (on a cluster, redis-py splits it into one batch per
node), which refreshes neither the access time nor the TTL. A hash the
script cannot decode, or a key of another type, is discarded (a WARNING on
the ``flask_gosession`` logger) and reads as an empty index.

Reads do not refresh the access time: :attr:`RedisProvider.touches_on_read`
is false, so the manager refreshes ``a`` and the TTL with
:meth:`~RedisProvider.session_touch` at most once per
``GOSESSION_REFRESH_INTERVAL`` for a session that is only read (every write
refreshes both anyway). A read-only request therefore costs exactly one
cheap round trip, and a session that is only read expires after between
``GOSESSION_MAX_LIFETIME - GOSESSION_REFRESH_INTERVAL`` and
``GOSESSION_MAX_LIFETIME`` seconds of idleness, as with the SQL and
Memcached stores.

Per-user index on Redis Cluster
-------------------------------

A session's hash and its user's index hash live in different slots, most
often on different masters, so no command can change both at once. The
manager makes up for it with the order of its writes, so that no
interleaving leaves a live session that belongs to a user outside that
user's index, nor lets a revoked session survive:

* **The index first, on the way in.** A key enters the index *before* the
  session record under that key is created: when a session is bound to a
  user, and at every rotation of a bound session, whose new key is added
  while the key being left stays listed (``keep``). If the request dies in
  between, the index lists a key with no record, which reads as missing
  and is pruned at its horizon; never the other way round.
* **The index last, on the way out.** A key leaves the index only *after*
  its session is destroyed, so a listed key is the only trace a live
  session could have, and it is there until the session is gone.
* **Revocation reads until it finds nothing new.** It reads the index,
  destroys every session listed (the destruction leaves a tombstone, which
  also refuses the later creation of a key that a rotation has not built
  yet), and reads the index again, until a read lists no key it has not
  destroyed. A rotation racing it added its new key before it marked the
  old record as rotated: either that mark fails on the tombstone (the
  rotation does not happen), or the new key was already in the index and
  the next read finds it.
* **Horizons bound expiry from above.** An entry's horizon is an upper
  bound of its session's expiry, which the manager moves forward as the
  session is used, so pruning by horizon (here and in the index's own
  expiry) never drops a live session.

Clients
-------

Exactly one of these is used, in this order of precedence:

* ``GOSESSION_REDIS``: a ready client (:class:`redis.Redis` or
  :class:`redis.cluster.RedisCluster`), used as is and never closed by the
  provider;
* ``GOSESSION_REDIS_SENTINELS`` with ``GOSESSION_REDIS_SENTINEL_MASTER``: a
  master client found through Sentinel;
* ``GOSESSION_REDIS_CLUSTER = True``: a :class:`redis.cluster.RedisCluster`
  that discovers the cluster from the node in ``GOSESSION_REDIS_URL``;
* otherwise a :class:`redis.Redis` for ``GOSESSION_REDIS_URL``.

Clients built here use ``GOSESSION_REDIS_TIMEOUT`` for connecting and for
each reply, and retry a command once, without delay, only after a
*connection* error (a connection the server closed, for instance after it
restarted); a timeout is never retried. A dead or hung server therefore
turns into :class:`~flask_gosession.errors.ProviderError` after about one
timeout, not after redis-py's default exponential backoff. Built clients
are created on first use, so an application starts even while Redis is down.

For a standalone server (the last case), the per-session commands
(``HGETALL``, the scripts, ``DEL``) skip redis-py's per-command machinery
and go through a :class:`~flask_gosession.providers._redis_lane.CommandLane`,
on connections with the same settings and the same retry rule. A client
passed in, a Sentinel master and a cluster are always driven through their
own API.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import threading
import typing as t

from .. import userindex
from ..errors import ConfigError, CorruptRecordError, ProviderError, RecordTooLarge
from ..ids import label
from ._addresses import flag, parse_address_list, positive_seconds
from ._limits import DEFAULT_MAX_RECORD_SIZE, MAX_RECORD_SIZE, MAX_RECORD_SIZE_DESCRIPTION, positive_int, record_cap
from ._redis_lane import CommandLane
from .base import (
    DEAD_FIELD,
    FORWARD_FIELD,
    Change,
    Outcome,
    Provider,
    Record,
    parse_counts,
    redact,
)

if t.TYPE_CHECKING:
    from flask import Flask
    from redis.commands.core import Script

# Both field prefixes are two characters long (_decode relies on it).

#: Hash field holding the access time.
ATIME_FIELD = "a"
#: Hash field holding the record's size in bytes (names and values of the
#: data and meta fields).
SIZE_FIELD = "s"
#: Redis's limit on one value (``proto-max-bulk-len``'s default), in bytes.
MAX_VALUE_SIZE = 512 * 1024 * 1024
#: Prefix of the hash fields holding user keys.
DATA_PREFIX = "d:"
#: Prefix of the hash fields holding meta fields.
META_PREFIX = "m:"

# Lua's unpack() is limited by the C stack (LUAI_MAXCSTACK, 8000 slots), so
# the scripts pass long argument lists to HSET/HDEL in chunks.
_CHUNKED = """
local function chunked(cmd, key, first, last, step)
  local i = first
  while i <= last do
    local j = math.min(i + step - 1, last)
    redis.call(cmd, key, unpack(ARGV, i, j))
    i = j + 1
  end
end
"""

#: KEYS[1] = store key; ARGV[1] = TTL in seconds; ARGV[2..] = field/value
#: pairs, ``a`` and ``s`` included.
INIT_SCRIPT = _CHUNKED + """
redis.call('DEL', KEYS[1])
chunked('HSET', KEYS[1], 2, #ARGV, 2000)
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""

#: KEYS[1] = store key; ARGV as for :data:`INIT_SCRIPT`. Writes only if
#: the key holds nothing; returns 1 if it wrote, 0 if not.
CREATE_SCRIPT = _CHUNKED + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
chunked('HSET', KEYS[1], 2, #ARGV, 2000)
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""

#: KEYS[1] = store key; ARGV[1] = TTL in seconds; ARGV[2] = the size limit
#: in bytes (0 for none); ARGV[3] = e, the number of expected meta fields;
#: ARGV[4 .. 3+2e] = field/value pairs that must hold (an empty value: the
#: field must be absent); ARGV[4+2e] = n, the number of fields to delete;
#: then those fields; then field/value pairs to set, ``a`` included. A
#: tombstone reads as missing; a record carrying the forward field is left
#: alone, even by a change that sets that field (the first rotation wins).
#: The type, the expectations and the size (the ``s`` field, computed once
#: for a hash that lacks it) are checked before anything is written, so the
#: script never fails half-way; a failed expectation gives 5, a record that
#: would grow past the limit gives ``{4, size}``.
UPDATE_SCRIPT = _CHUNKED + """
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'none' then return 0 end
if kind ~= 'hash' then return 3 end
if redis.call('HEXISTS', KEYS[1], 'm:%(dead)s') == 1 then return 0 end
if redis.call('HEXISTS', KEYS[1], 'm:%(forward)s') == 1 then return 2 end
local limit = tonumber(ARGV[2])
local nexp = tonumber(ARGV[3])
for i = 4, 3 + 2 * nexp, 2 do
  local have = redis.call('HGET', KEYS[1], ARGV[i])
  if have == false then have = '' end
  if have ~= ARGV[i + 1] then return 5 end
end
local at = 4 + 2 * nexp
local ndel = tonumber(ARGV[at])
local size = tonumber(redis.call('HGET', KEYS[1], '%(size)s'))
if not size then
  size = 0
  for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
    local family = string.sub(name, 1, 2)
    if family == 'd:' or family == 'm:' then
      size = size + #name + redis.call('HSTRLEN', KEYS[1], name)
    end
  end
end
for i = at + 1, at + ndel do
  local old = redis.call('HSTRLEN', KEYS[1], ARGV[i])
  if old > 0 then size = size - #ARGV[i] - old end
end
for i = at + 1 + ndel, #ARGV - 1, 2 do
  local name = ARGV[i]
  if name ~= '%(atime)s' then
    local old = redis.call('HSTRLEN', KEYS[1], name)
    if old > 0 then size = size - #name - old end
    size = size + #name + #ARGV[i + 1]
  end
end
if limit > 0 and size > limit then return {4, size} end
chunked('HDEL', KEYS[1], at + 1, at + ndel, 1000)
chunked('HSET', KEYS[1], at + 1 + ndel, #ARGV, 2000)
redis.call('HSET', KEYS[1], '%(size)s', string.format('%%d', size))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
""" % {"forward": FORWARD_FIELD, "dead": DEAD_FIELD, "size": SIZE_FIELD, "atime": ATIME_FIELD}

#: KEYS[1] = store key; ARGV[1] = atime; ARGV[2] = TTL in seconds. Only a
#: stored hash is touched: a missing record stays missing.
TOUCH_SCRIPT = """
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then return 0 end
redis.call('HSET', KEYS[1], 'a', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""

#: Where a user's index lives, after the key prefix.
USER_INDEX_PREFIX = "u:"

#: KEYS[1] = the index hash; ARGV[1] = now; ARGV[2] = ``r`` (a read: prune
#: only, return every entry) or ``w`` (a write: return the evicting
#: entries); for a write, ARGV[3] = the key to add (empty: none), ARGV[4] =
#: its entry's JSON (never marked), ARGV[5] = the key to keep, which the
#: added entry records as the key it replaces (``p``; empty: none),
#: ARGV[6] = the limit (empty: none), ARGV[7] = ``1`` to evict over the
#: limit, ARGV[8..] = the keys to remove. Runs
#: :func:`flask_gosession.userindex.apply_write`, step for step. Returns
#: ``{added, corrupt, key1, json1, ...}``; ``corrupt`` is 1 when the stored
#: hash (or a key of another type) could not be decoded and was discarded.
#: Marked entries, and added ones given a ``p``, are re-encoded with ``%.17g`` numbers: cjson's own
#: encoder keeps only 14 digits, too few for a time in seconds.
INDEX_SCRIPT = """
local key, now, mode = KEYS[1], tonumber(ARGV[1]), ARGV[2]
local HEX = '^' .. string.rep('[0-9a-f]', 64) .. '$'
local function marked(o)
  local e = o.e
  return e ~= nil and e ~= false and e ~= 0 and e ~= '' and e ~= cjson.null
end
local function valid(name, o)
  if type(o) == 'table' and o.p == cjson.null then o.p = nil end
  if not string.match(name, HEX) or type(o) ~= 'table' or type(o.h) ~= 'string'
      or type(o.c) ~= 'number' or type(o.z) ~= 'number' or type(o.a) ~= 'number'
      or type(o.i) ~= 'table' or (o.p ~= nil and not (type(o.p) == 'string'
      and string.match(o.p, HEX))) then
    return false
  end
  for k, v in pairs(o.i) do
    if type(k) ~= 'string' or type(v) ~= 'string' then return false end
  end
  return true
end
local function num(n) return string.format('%.17g', n) end
local function encode(o)
  local json = '{"h":' .. cjson.encode(o.h) .. ',"c":' .. num(o.c) .. ',"z":' .. num(o.z)
    .. ',"a":' .. num(o.a) .. ',"i":' .. cjson.encode(o.i)
  if o.p ~= nil then json = json .. ',"p":' .. cjson.encode(o.p) end
  if marked(o) then json = json .. ',"e":1' end
  return json .. '}'
end
local function mark(o)
  o.e = 1
  return encode(o)
end
local function batched(cmd, list, step)
  local i = 1
  while i <= #list do
    local j = math.min(i + step - 1, #list)
    redis.call(cmd, key, unpack(list, i, j))
    i = j + 1
  end
end

-- entries[name] = {decoded, json}
local entries, corrupt = {}, 0
local kind = redis.call('TYPE', key)['ok']
if kind == 'hash' then
  local flat = redis.call('HGETALL', key)
  for i = 1, #flat, 2 do
    local ok, o = pcall(cjson.decode, flat[i + 1])
    if ok and valid(flat[i], o) then
      entries[flat[i]] = {o, flat[i + 1]}
    else
      corrupt = 1  -- this member only: the others stay reachable for revocation
    end
  end
elseif kind ~= 'none' then
  corrupt = 2  -- not a hash at all
end
local gone, dirty, changed = {}, {}, corrupt ~= 0
if kind == 'hash' and corrupt == 1 then
  local flat = redis.call('HGETALL', key)
  for i = 1, #flat, 2 do
    if entries[flat[i]] == nil then gone[flat[i]] = true end
  end
end
local function drop(name)
  entries[name] = nil
  gone[name] = true
  dirty[name] = nil
  changed = true
end

for name, e in pairs(entries) do
  if e[1].z <= now then drop(name) end
end
local added = 1
if mode == 'w' then
  for i = 8, #ARGV do
    if entries[ARGV[i]] then drop(ARGV[i]) end
  end
  local name, keep = ARGV[3], ARGV[5]
  if name ~= '' then
    local add = cjson.decode(ARGV[4])
    local kept = keep ~= '' and entries[keep] or nil
    local left = kept and kept[1].p or nil
    if left and left ~= name and entries[left] and entries[left][1].h == add.h then
      drop(left)
    end
    local limit = tonumber(ARGV[6])
    if limit then
      local oldest, handles = {}, {}
      for _, e in pairs(entries) do
        local o = e[1]
        if not marked(o) and o.h ~= add.h then
          if oldest[o.h] == nil then
            handles[#handles + 1] = o.h
            oldest[o.h] = o.c
          elseif o.c < oldest[o.h] then
            oldest[o.h] = o.c
          end
        end
      end
      local excess = #handles - (limit - 1)
      if excess > 0 then
        if ARGV[7] ~= '1' then
          added = 0
        else
          table.sort(handles, function(x, y)
            if oldest[x] ~= oldest[y] then return oldest[x] < oldest[y] end
            return x < y
          end)
          local victims = {}
          for i = 1, excess do victims[handles[i]] = true end
          for other, e in pairs(entries) do
            if victims[e[1].h] and not marked(e[1]) then
              e[2] = mark(e[1])
              dirty[other] = true
              changed = true
            end
          end
        end
      end
    end
    if added == 1 then
      local inherit = false
      for _, e in pairs(entries) do
        if e[1].h == add.h and marked(e[1]) then inherit = true end
      end
      local json = ARGV[4]
      local existing = entries[name]
      if keep ~= '' then
        add.p = keep
      elseif existing and existing[1].p ~= nil then
        add.p = existing[1].p
      end
      if inherit then
        json = mark(add)
      elseif add.p ~= nil then
        json = encode(add)
      end
      entries[name] = {add, json}
      gone[name] = nil
      dirty[name] = true
      changed = true
    end
  end
end

if changed then
  if corrupt == 2 then redis.call('DEL', key) end
  local removed, pairs_ = {}, {}
  for name in pairs(gone) do removed[#removed + 1] = name end
  for name in pairs(dirty) do
    pairs_[#pairs_ + 1] = name
    pairs_[#pairs_ + 1] = entries[name][2]
  end
  batched('HDEL', removed, 1000)
  batched('HSET', pairs_, 2000)
  local horizon = nil
  for _, e in pairs(entries) do
    if horizon == nil or e[1].z > horizon then horizon = e[1].z end
  end
  if horizon == nil then
    redis.call('DEL', key)
  else
    redis.call('PEXPIRE', key, math.ceil((horizon - now) * 1000))
  end
end

local reply = {added, corrupt}
for name, e in pairs(entries) do
  if mode == 'r' or marked(e[1]) then
    reply[#reply + 1] = name
    reply[#reply + 1] = e[2]
  end
end
return reply
"""

#: The hash of event counters, after the prefix.
STATS_NAME = "stats"


def _text(value: t.Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


#: A session's store key after the prefix (index keys are not).
_SESSION_NAME = re.compile(rb"[0-9a-f]{64}")

log = logging.getLogger("flask_gosession")

_UPDATE_OUTCOMES = {
    0: Outcome.MISSING, 1: Outcome.APPLIED, 2: Outcome.FORWARDED, 5: Outcome.CONFLICT,
}
_WRONG_TYPE = 3
_TOO_LARGE = 4

#: How many keys :meth:`RedisProvider.session_clear` deletes per command,
#: and the ``COUNT`` hint for ``SCAN``.
SCAN_BATCH = 500


class RedisProvider(Provider):
    """Sessions in Redis, standalone, behind Sentinel, or in a Redis Cluster.

    :param client: a factory returning the redis-py client to use, called
        once on first use (so that building the app never blocks on Redis).
    :param key_prefix: prepended to every key; also what
        :meth:`session_count` and :meth:`session_clear` scan for.
    :param owns_client: close the client in :meth:`close`; false for a
        client the application passed in.
    :param fast_lane: send the per-session commands through a
        :class:`~flask_gosession.providers._redis_lane.CommandLane` on the
        client's connection settings rather than through the client's
        command machinery (for a standalone :class:`redis.Redis` the
        provider built itself; administration commands always use the
        client).
    :param max_record_size: the largest record, in bytes (see the module
        docs); ``None`` for no cap beyond Redis's 512 MB per value.

    Use :meth:`from_config` rather than building one by hand.
    """

    touches_on_read = False
    native_ttl = True

    def __init__(
        self,
        client: t.Callable[[], t.Any],
        key_prefix: str = "gosession:",
        *,
        owns_client: bool = True,
        fast_lane: bool = False,
        max_record_size: int | None = None,
    ) -> None:
        _import_redis()  # fail here, not at the first request
        #: Prepended to every key in Redis.
        self.key_prefix = key_prefix
        self.max_record_size = positive_int(max_record_size, MAX_RECORD_SIZE, optional=True)
        self._factory = client
        self._owns_client = owns_client
        self._client: t.Any = None
        self._fast_lane = fast_lane
        self._lane: CommandLane | None = None
        self._scripts: dict[str, Script] = {}
        self._lock = threading.Lock()
        self._errors = _redis_errors()
        from redis.exceptions import NoScriptError

        self._no_script = NoScriptError

    # -- configuration ------------------------------------------------------

    config_descriptions: t.ClassVar[t.Mapping[str, str]] = {
        "GOSESSION_REDIS_URL": "Redis URL (also `rediss://`, `unix://`).",
        "GOSESSION_REDIS": (
            "An existing `redis.Redis` or `redis.cluster.RedisCluster` client (wins over the URL)."),
        "GOSESSION_KEY_PREFIX": "Prefix of every key the store writes in Redis.",
        "GOSESSION_REDIS_TIMEOUT": "Connect and read timeout in seconds.",
        "GOSESSION_REDIS_CLUSTER": "Treat the URL as a node of a Redis Cluster.",
        "GOSESSION_REDIS_SENTINELS": (
            "A list of `host:port` Sentinels, with `GOSESSION_REDIS_SENTINEL_MASTER`."),
        "GOSESSION_REDIS_SENTINEL_MASTER": "The Sentinel service name of the master.",
        MAX_RECORD_SIZE: MAX_RECORD_SIZE_DESCRIPTION,
    }

    @classmethod
    def config_defaults(cls, app: Flask) -> dict[str, t.Any]:
        return {
            "GOSESSION_REDIS_URL": "redis://127.0.0.1:6379/0",
            "GOSESSION_REDIS": None,
            "GOSESSION_KEY_PREFIX": "gosession:",
            "GOSESSION_REDIS_TIMEOUT": 2.0,
            "GOSESSION_REDIS_CLUSTER": False,
            "GOSESSION_REDIS_SENTINELS": None,
            "GOSESSION_REDIS_SENTINEL_MASTER": None,
            MAX_RECORD_SIZE: DEFAULT_MAX_RECORD_SIZE,
        }

    @classmethod
    def from_config(cls, app: Flask) -> RedisProvider:
        """Validate the ``GOSESSION_REDIS*`` settings and build the provider.

        :raises ConfigError: naming the setting and its bad value, or the
            extra to install when redis-py is missing.
        """
        redis = _import_redis()
        config = app.config
        prefix = config["GOSESSION_KEY_PREFIX"]
        if not isinstance(prefix, str) or not prefix:
            # An empty prefix would make session_clear() empty the database.
            raise ConfigError(
                f"GOSESSION_KEY_PREFIX must be a non-empty string, got {prefix!r}"
            )
        limit = record_cap(config)

        client = config["GOSESSION_REDIS"]
        if client is not None:
            if not isinstance(client, (redis.Redis, redis.cluster.RedisCluster)):
                raise ConfigError(
                    "GOSESSION_REDIS must be a redis.Redis or "
                    f"redis.cluster.RedisCluster instance, got {client!r}"
                )
            if client.get_encoder().decode_responses:
                # Stored values are serializer bytes (msgpack is not UTF-8).
                raise ConfigError(
                    "GOSESSION_REDIS must be built without decode_responses=True "
                    f"(got {client!r})"
                )
            return cls(lambda: client, prefix, owns_client=False, max_record_size=limit)

        timeout = positive_seconds(config["GOSESSION_REDIS_TIMEOUT"], "GOSESSION_REDIS_TIMEOUT")
        url = config["GOSESSION_REDIS_URL"]
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(
                "GOSESSION_REDIS_URL must be a redis://, rediss:// or unix:// URL, "
                f"got {url!r}"
            )
        cluster = flag(config["GOSESSION_REDIS_CLUSTER"], "GOSESSION_REDIS_CLUSTER")
        sentinels = config["GOSESSION_REDIS_SENTINELS"]
        master = config["GOSESSION_REDIS_SENTINEL_MASTER"]
        if sentinels is not None:
            sentinels = parse_address_list(sentinels, "GOSESSION_REDIS_SENTINELS")
            if not isinstance(master, str) or not master:
                raise ConfigError(
                    "GOSESSION_REDIS_SENTINEL_MASTER must name the monitored master "
                    f"when GOSESSION_REDIS_SENTINELS is set, got {master!r}"
                )
            if cluster:
                raise ConfigError(
                    "GOSESSION_REDIS_CLUSTER and GOSESSION_REDIS_SENTINELS cannot both be set"
                )
        try:
            url_kwargs = redis.connection.parse_url(url)
        except ValueError as err:
            raise ConfigError(f"GOSESSION_REDIS_URL={url!r} is invalid: {err}") from err

        common = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": _retry_policy(),
        }
        if sentinels is not None:
            return cls(_sentinel_factory(sentinels, master, url_kwargs, common), prefix,
                       max_record_size=limit)
        if cluster:
            if not url.startswith(("redis://", "rediss://")):
                raise ConfigError(
                    f"GOSESSION_REDIS_URL={url!r}: a cluster needs a redis:// or rediss:// URL"
                )
            return cls(lambda: redis.cluster.RedisCluster.from_url(url, **common), prefix,
                       max_record_size=limit)
        # A standalone server: the per-session commands take the fast lane.
        return cls(lambda: redis.Redis.from_url(url, **common), prefix, fast_lane=True,
                   max_record_size=limit)

    # -- plumbing -----------------------------------------------------------

    @property
    def client(self) -> t.Any:
        """The redis-py client, built on first use.

        :raises ProviderError: if building it fails (a cluster client
            contacts the cluster as it is built).
        """
        client = self._client
        if client is None:
            with self._lock:
                client = self._client
                if client is None:
                    try:
                        client = self._factory()
                    except self._errors as err:
                        raise ProviderError(f"cannot connect to Redis: {redact(str(err))}") from err
                    for name, source in (
                        ("init", INIT_SCRIPT),
                        ("create", CREATE_SCRIPT),
                        ("update", UPDATE_SCRIPT),
                        ("touch", TOUCH_SCRIPT),
                        ("index", INDEX_SCRIPT),
                    ):
                        self._scripts[name] = client.register_script(source)
                    if self._fast_lane:
                        self._lane = CommandLane(client.connection_pool)
                    self._client = client
        return client

    def _send(self, *args: t.Any) -> t.Any:
        """Send one per-session command; the reply comes without redis-py's
        response callbacks when the fast lane is used, with them otherwise."""
        lane = self._lane
        if lane is None:
            client = self.client  # builds the lane, if there is to be one
            lane = self._lane
            if lane is None:
                return client.execute_command(*args)
        return lane.call(*args)

    def _run(self, script: str, key: str, args: list[t.Any]) -> t.Any:
        """Run one of the scripts on ``key``, turning client errors into ours.

        ``EVALSHA`` is sent directly rather than through the
        :class:`~redis.commands.core.Script` object, whose wrapper costs
        more than the script itself on a fast network; a ``NOSCRIPT`` reply
        (the server restarted or flushed its scripts) loads the script again,
        as the wrapper would.
        """
        client = self.client  # builds the scripts (and lane) on first use
        compiled = self._scripts[script]
        name = self.key_prefix + key
        try:
            try:
                return self._send("EVALSHA", compiled.sha, 1, name, *args)
            except self._no_script:
                compiled.sha = client.script_load(compiled.script)
                return self._send("EVALSHA", compiled.sha, 1, name, *args)
        except self._errors as err:
            raise self._error(script, err) from err

    @staticmethod
    def _error(operation: str, err: BaseException) -> Exception:
        """Our exception for a client error: a key of the wrong type is a
        corrupt record, anything else a failing store."""
        text = redact(str(err))
        if "WRONGTYPE" in text:
            return CorruptRecordError(f"the Redis key for this session is not a hash: {text}")
        return ProviderError(f"Redis {operation} failed: {text}")

    def _ttl(self) -> int:
        return max(1, math.ceil(self.max_lifetime))

    # -- the provider contract ---------------------------------------------

    def _fields(self, key: str, pairs: list[t.Any], *, whole: bool = True) -> int:
        """The bytes of ``pairs`` (names and values), checking each value
        against :data:`MAX_VALUE_SIZE` and the total against the cap.

        :param whole: ``pairs`` are a whole record (:meth:`check_size`),
            not the fields of a change (:meth:`check_limit`).
        :raises RecordTooLarge: for a value or a total over its limit.
        """
        size = 0
        for i in range(0, len(pairs), 2):
            value = len(pairs[i + 1])
            if value > MAX_VALUE_SIZE:
                raise RecordTooLarge(key, value, MAX_VALUE_SIZE, "Redis's limit on one value")
            size += len(pairs[i].encode()) + value
        (self.check_size if whole else self.check_limit)(key, size)
        return size

    def _record_args(self, key: str, record: Record) -> list[t.Any]:
        dumps = self.serializer.dumps
        pairs: list[t.Any] = []
        for name, value in record.data.items():
            pairs += (DATA_PREFIX + name, dumps(value))
        for name, value in record.meta.items():
            if value is not None:
                pairs += (META_PREFIX + name, dumps(value))
        size = self._fields(key, pairs)
        return [self._ttl(), *pairs, ATIME_FIELD, repr(float(record.atime)), SIZE_FIELD, str(size)]

    def session_init(self, key: str, record: Record) -> None:
        self._run("init", key, self._record_args(key, record))

    def session_create(self, key: str, record: Record) -> bool:
        return int(self._run("create", key, self._record_args(key, record))) == 1

    def session_read(self, key: str, now: float) -> Record | None:
        try:
            fields = self._send("HGETALL", self.key_prefix + key)
        except self._errors as err:
            raise self._error("read", err) from err
        if not fields:
            return None
        return self._decode(fields)

    def session_update(self, key: str, change: Change) -> Outcome:
        dumps = self.serializer.dumps
        deleted = [DATA_PREFIX + name for name in change.deleted if name not in change.set]
        pairs: list[t.Any] = []
        for name, value in change.set.items():
            pairs += (DATA_PREFIX + name, dumps(value))
        for name, value in change.meta.items():
            if value is None:
                deleted.append(META_PREFIX + name)
            else:
                pairs += (META_PREFIX + name, dumps(value))
        self._fields(key, pairs, whole=False)  # what is sent already too large: not sent
        pairs += (ATIME_FIELD, repr(float(change.atime)))
        expected: list[t.Any] = []
        for name, value in change.expect.items():
            expected += (META_PREFIX + name, b"" if value is None else dumps(value))
        limit = self.max_record_size or 0
        result = self._run("update", key, [
            self._ttl(), limit, len(change.expect), *expected, len(deleted), *deleted, *pairs,
        ])
        if isinstance(result, list) and result and int(result[0]) == _TOO_LARGE:
            raise RecordTooLarge(key, int(result[1]), limit, self.max_record_setting)
        if result == _WRONG_TYPE:
            raise CorruptRecordError("the Redis key for this session is not a hash")
        return _UPDATE_OUTCOMES[int(result)]

    def session_touch(self, key: str, atime: float) -> None:
        self._run("touch", key, [repr(float(atime)), self._ttl()])

    def session_destroy(self, key: str) -> None:
        try:
            self._send("DEL", self.key_prefix + key)
        except self._errors as err:
            raise ProviderError(f"Redis destroy failed: {redact(str(err))}") from err

    def session_gc(self, max_lifetime: int) -> int:
        """Nothing to do: Redis expires each hash by its TTL."""
        return 0

    # -- administration -------------------------------------------------------

    def _scan(self) -> t.Iterator[bytes]:
        # SCAN MATCH is a glob: escape the prefix so it matches literally.
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in self.key_prefix) + "*"
        return t.cast("t.Iterator[bytes]", self.client.scan_iter(match=pattern, count=SCAN_BATCH))

    def _is_session(self, name: bytes) -> bool:
        """Whether a scanned key is a session's (not a user index's)."""
        return _SESSION_NAME.fullmatch(name, len(self.key_prefix.encode())) is not None

    def session_count(self) -> int:
        """Count the session keys under the prefix with ``SCAN`` (on every
        cluster node); user indexes are not counted.

        ``SCAN`` may report a key that is created or deleted meanwhile twice
        or not at all; the count is exact on a quiet store.
        """
        try:
            return sum(1 for name in self._scan() if self._is_session(name))
        except self._errors as err:
            raise ProviderError(f"Redis count failed: {redact(str(err))}") from err

    counts_events = True

    def count_event(self, name: str) -> None:
        """``HINCRBY`` on the one counters hash, ``<prefix>stats`` (one key,
        so it works on Redis Cluster too; no TTL: counters are kept until
        ``flask gosession clear``)."""
        try:
            self._send("HINCRBY", self.key_prefix + STATS_NAME, name, 1)
        except self._errors as err:
            raise ProviderError(f"Redis count_event failed: {redact(str(err))}") from err

    def event_counts(self) -> dict[str, int]:
        try:
            fields = self.client.hgetall(self.key_prefix + STATS_NAME)
        except self._errors as err:
            raise ProviderError(f"Redis event_counts failed: {redact(str(err))}") from err
        return parse_counts({_text(k): v for k, v in fields.items()})

    def session_keys(self) -> t.Iterator[str]:
        """The session keys under the prefix, found with ``SCAN`` (on every
        cluster node); user indexes and the event counters are not sessions."""
        start = len(self.key_prefix.encode())
        try:
            names = [name[start:].decode() for name in self._scan() if self._is_session(name)]
        except self._errors as err:
            raise ProviderError(f"Redis listing failed: {redact(str(err))}") from err
        return iter(names)

    def session_clear(self) -> int:
        """Delete every key under the prefix (sessions and user indexes),
        ``SCAN`` batch by batch.

        Keys are removed with ``UNLINK`` (freed in the background by
        Redis). Other keys in the same database are never touched.
        :returns: how many session keys were deleted.
        """
        client = self.client
        removed = 0
        batches: dict[bool, list[bytes]] = {True: [], False: []}

        def flush(sessions: bool) -> None:
            nonlocal removed
            batch = batches[sessions]
            if batch:
                deleted = client.unlink(*batch)
                removed += deleted if sessions else 0
                batch.clear()

        try:
            for name in self._scan():
                sessions = self._is_session(name)
                batches[sessions].append(name)
                if len(batches[sessions]) >= SCAN_BATCH:
                    flush(sessions)
            flush(True)
            flush(False)
        except self._errors as err:
            raise ProviderError(f"Redis clear failed: {redact(str(err))}") from err
        return removed

    # -- the per-user index -----------------------------------------------------

    def index_write(self, user: str, write: userindex.IndexWrite, now: float) -> userindex.IndexResult:
        args: list[t.Any] = [repr(float(now)), "w"]
        add = write.add
        if add is None:
            args += ["", "", ""]
        else:
            entry = dataclasses.replace(add, evicting=False).to_json()
            args += [add.key, json.dumps(entry, separators=(",", ":")), write.keep or ""]
        args += ["" if write.limit is None else str(int(write.limit)), "1" if write.evict else "0"]
        args += sorted(write.remove)
        added, evicting = self._index(user, args)
        return userindex.IndexResult(added, tuple(evicting))

    def index_read(self, user: str, now: float) -> list[userindex.IndexEntry]:
        return self._index(user, [repr(float(now)), "r"])[1]

    def _index(self, user: str, args: list[t.Any]) -> tuple[bool, list[userindex.IndexEntry]]:
        """Run :data:`INDEX_SCRIPT` on the index of ``user``; return its
        ``added`` flag and the entries it returned."""
        reply = self._run("index", USER_INDEX_PREFIX + _user_key(user), args)
        added, corrupt, flat = bool(int(reply[0])), int(reply[1]), reply[2:]
        if corrupt == 1:
            log.warning("discarding corrupt entries of user index %s (the others are kept)", label(user))
        elif corrupt:
            log.warning("discarding corrupt user index %s: the Redis key is not a hash", label(user))
        try:
            members = {
                (name.decode() if isinstance(name, bytes) else name): json.loads(value)
                for name, value in zip(flat[::2], flat[1::2], strict=True)
            }
            entries = userindex.decode_entries(members, user=user)
        except (ValueError, CorruptRecordError) as err:
            # The script accepted what the decoder does not: read as empty.
            log.warning("discarding corrupt user index %s: %s", label(user), err)
            return added, []
        return added, list(entries.values())

    def session_peek(self, keys: t.Sequence[str], now: float) -> dict[str, Record | None]:
        """One pipeline of ``HGETALL`` (one round trip; one per node on a
        cluster), which refreshes nothing; a corrupt record reads as ``None``."""
        records: dict[str, Record | None] = dict.fromkeys(keys)
        unique = list(records)
        if not unique:
            return records
        try:
            pipe = self.client.pipeline(transaction=False)
            for key in unique:
                pipe.hgetall(self.key_prefix + key)
            replies = pipe.execute(raise_on_error=False)
        except self._errors as err:
            raise ProviderError(f"Redis read failed: {redact(str(err))}") from err
        for key, fields in zip(unique, replies, strict=True):
            if fields and not isinstance(fields, BaseException):
                try:
                    records[key] = self._decode(fields)
                except CorruptRecordError:
                    pass
        return records

    # -- another library's keys (imports) -----------------------------------

    def legacy_get(self, name: str) -> tuple[bytes, float | None] | None:
        """The string stored under the full Redis key ``name`` (outside our
        prefix, e.g. Flask-Session's ``session:<sid>``) and its remaining
        lifetime in seconds (``None``: no expiry); ``None`` if absent.

        :raises CorruptRecordError: if the key holds something else than a string.
        :raises ProviderError: if Redis fails.
        """
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.get(name)
            pipe.pttl(name)
            value, pttl = pipe.execute()
        except self._errors as err:
            raise self._error("read", err) from err
        if value is None or not isinstance(pttl, int) or pttl == -2:
            return None
        raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)
        return raw, (pttl / 1000 if pttl >= 0 else None)

    def legacy_delete(self, name: str) -> None:
        """Delete the full Redis key ``name``, as :meth:`legacy_get` names it.

        :raises ProviderError: if Redis fails.
        """
        try:
            self.client.delete(name)
        except self._errors as err:
            raise ProviderError(f"Redis delete failed: {redact(str(err))}") from err

    def close(self) -> None:
        """Close a client built by the provider; leave the application's alone.

        A later call builds a fresh client, so closing is never fatal.
        """
        with self._lock:
            client, self._client = self._client, None
            lane, self._lane = self._lane, None
            self._scripts.clear()
        if lane is not None:
            lane.close()
        if client is not None and self._owns_client:
            _close_client(client)

    # -- decoding -----------------------------------------------------------

    def _decode(self, fields: list[bytes] | dict[bytes, bytes]) -> Record:
        """Turn an ``HGETALL`` reply into a record: a flat list of names and
        values (RESP2, fast lane) or a dict (RESP3, or the client's callback).

        :raises CorruptRecordError: for a missing or bad ``a`` field, or a
            value the serializer cannot decode.
        """
        loads = self.serializer.loads
        data: dict[str, t.Any] = {}
        meta: dict[str, t.Any] = {}
        atime: float | None = None
        if isinstance(fields, dict):
            items: t.Iterable[tuple[t.Any, t.Any]] = fields.items()
        else:
            pairs = iter(fields)
            items = zip(pairs, pairs, strict=False)  # names and values, alternating
        try:
            for raw, value in items:
                name = raw.decode() if isinstance(raw, bytes) else raw
                if name == ATIME_FIELD:
                    atime = float(value)
                elif name.startswith(DATA_PREFIX):
                    data[name[2:]] = loads(value)
                elif name.startswith(META_PREFIX):
                    meta[name[2:]] = loads(value)
        except (ValueError, TypeError) as err:  # UnicodeDecodeError is a ValueError
            raise CorruptRecordError(f"undecodable Redis session hash: {err}") from err
        if atime is None or not math.isfinite(atime):
            raise CorruptRecordError("Redis session hash has no valid access time")
        return Record(data, meta, atime)


def _user_key(user: str) -> str:
    """``user`` if it is a user key (64 lowercase hex digits).

    :raises ValueError: for anything else, so no other key is ever named.
    """
    if not isinstance(user, str) or _SESSION_NAME.fullmatch(user.encode()) is None:
        raise ValueError("invalid user key: expected a lowercase hex SHA-256 digest")
    return user


# -- client building -----------------------------------------------------------


def _import_redis() -> t.Any:
    """Import redis-py and the submodules used here.

    :raises ConfigError: naming the extra to install if it is missing.
    """
    try:
        import redis
        import redis.cluster
        import redis.sentinel
    except ImportError as err:
        raise ConfigError(
            "GOSESSION_PROVIDER='redis' needs redis-py: pip install flask-gosession[redis]"
        ) from err
    return redis


def _redis_errors() -> tuple[type[BaseException], ...]:
    """Every exception redis-py raises for a failing server or cluster."""
    from redis.exceptions import RedisClusterException, RedisError

    # RedisClusterException (no node covers a slot, no node reachable while
    # the cluster is built, ...) does not derive from RedisError.
    return (RedisError, RedisClusterException, OSError)


def _retry_policy() -> t.Any:
    """One immediate retry, after a connection error only.

    The retry replaces a connection the server closed (it restarted, or
    dropped an idle client); it is immediate, so a refused connection still
    fails at once. Timeouts are not retried, so a hung server costs one
    ``GOSESSION_REDIS_TIMEOUT``. Each script is safe to run twice.
    """
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError
    from redis.retry import Retry

    return Retry(NoBackoff(), 1, supported_errors=(ConnectionError,))


def _sentinel_factory(
    sentinels: list[tuple[str, int]],
    master: str,
    url_kwargs: dict[str, t.Any],
    common: dict[str, t.Any],
) -> t.Callable[[], t.Any]:
    """Build a factory for a master client found through Sentinel.

    The URL's database, username and password apply to the master; its host
    and port are ignored. Sentinels are asked with the same timeouts.
    """
    from redis.sentinel import Sentinel

    master_kwargs = {k: url_kwargs[k] for k in ("db", "username", "password") if k in url_kwargs}

    def factory() -> t.Any:
        sentinel = Sentinel(sentinels, sentinel_kwargs=dict(common), **common)  # type: ignore[no-untyped-call]
        client = sentinel.master_for(master, **master_kwargs, **common)  # type: ignore[no-untyped-call]
        # Keep the sentinel clients reachable so close() can release them.
        client._gosession_sentinel = sentinel
        return client

    return factory


def _close_client(client: t.Any) -> None:
    """Close a client and its sockets; for Sentinel, the sentinels' clients too.

    A cluster client's ``close()`` leaves the connection pools of its nodes
    open (redis-py builds each node's client with
    ``auto_close_connection_pool=False``), so their connections are
    disconnected here rather than left to the garbage collector.
    """
    sentinel = getattr(client, "_gosession_sentinel", None)
    get_nodes = getattr(client, "get_nodes", None)  # a cluster client
    if get_nodes is not None:
        for node in get_nodes():
            if node.redis_connection is not None:
                node.redis_connection.connection_pool.disconnect()
    client.close()
    if sentinel is not None:
        for sentinel_client in sentinel.sentinels:
            sentinel_client.close()
