"""The redis:// and rediss:// store: state shared by every relay process (replicas, gunicorn workers) through one
Redis, 7.0 or later (or Valkey). redis-py is imported here only, so a relay on memory:// or SQLite never loads it.

Keys. Every key starts with the prefix (STATE_PREFIX, default "rcwebhook:"), so several relays can share one Redis,
then a hash tag: the keys one call touches share it, so its Lua script (or MULTI) also runs on Redis Cluster, where
all the keys of a script must live in one slot. Ids are the relay's own (occurrence digests, random message ids,
Twilio's sids); hooks are only ever named by their hook_key digest, so no key or value holds a hook URL or token.

  <prefix>{journal}:  everything a WriteBatch touches (one write() is one script, so one slot):
    a:<alert id>                       hash: an AlertRecord's fields (labels and annotations as JSON)
    d:<alert id>                       list: its deliveries as JSON, oldest first, the newest MAX_DELIVERIES_PER_ALERT
    alerts:first                       zset id → first_received (alerts(), newest first; ties: the id, descending)
    alerts:first:status:<status>       zset id → first_received, per status; likewise
    alerts:first:severity:<severity>   ... per severity, and
    alerts:first:integration:<name>    ... per integration (alerts() walks the smallest that a filter names)
    alerts:resolved                    zset id → resolved_at, those resolved (newest_by="resolved_at")
    alerts:unresolved                  zset id → 0, the others (after them, by id descending)
    alerts:updated                     zset id → updated_at (retention; counts)
    notifications                      hash id → NotificationRecord as JSON
    notifications:received             zset id → received
    groups                             hash [hook_key, group_id hex] as JSON → GroupMemory as JSON
    groups:finished                    zset field → finished_at
    threads                            hash [hook_key, alert id] as JSON → ThreadMessage as JSON
    threads:at                         zset field → at
  <prefix>{sms}:  SMS escalation (issue 11):
    m:<sms id>                         hash: an SmsMessage's fields (alerts as a JSON list)
    ma:<sms id>                        set: the occurrence ids the message names
    alert:<alert id>                   set: the messages naming the occurrence (sms_for_alert)
    sid:<sid>                          set: the messages with Twilio's sid (one)
    sms:updated                        zset id → updated_at, every message (recent_sms; counts)
    sms:open                           zset id → next_attempt_at, the open ones (due_sms, open_sms; never pruned)
    sms:final                          zset id → updated_at, the final ones (prune)
    sms:sent                           zset id → sent_at, those SMS_SENT (sms_sent_times: the hourly and daily caps)
    paged / paged:at                   hash [recipient, kind, alert id] as JSON → at, and zset field → at
    resolved / resolved:at             hash alert id → at, and zset alert id → at
    status:<sid>                       hash: Twilio's latest callback for the sid (status, error_code, at)
    statuses:at                        zset sid → at
    opt_outs                           hash recipient → at
The other shared state of issue 12 (pacing, leases, the live feed) keeps to the same rule with tags of its own.

Values. Text is UTF-8 with lone surrogates kept ("surrogatepass"), so every string comes back exactly as given (as
in the memory store; SQLite turns them into U+FFFD). Times are Python's repr of the float: Lua compares them as
numbers but only ever stores the strings it was given, so no precision is lost (Lua would print 14 digits). A time
that is not finite is refused (StoreError) before anything is sent.

Atomicity. A Redis script runs alone: no other client's command runs in the middle of it. Each script does its reads
(and whatever could fail) before its first write, and each carries a "#!lua" line with its flags (Redis 7): one that
may write is refused before it starts when Redis is over maxmemory, never half-way through (use maxmemory-policy
noeviction for these keys: an evicted index entry would make records vanish from queries); the prune scripts, which
only delete, are flagged allow-oom so that a full Redis can still be pruned; the read-only ones (no-writes) always
run. A call that timed out may still have been applied (Redis had it): the caller cannot tell, as with any server.
- write(): one script; the upsert rules of Store.write are ported into it (staged in a first pass, as MemoryStore
  stages them, then written).
- schedule_sms(): one script: it checks every (recipient, kind, alert id) pair against `paged` and stages the call's
  own pairs, refuses a duplicate message id before writing anything, then records the pairs and the messages. Two
  processes scheduling the same pair at once are two scripts, one after the other: the second finds it paged.
- save_sms() and record_sms_status(): one script each. Twilio's status ranking is ported into Lua: the rank table
  (TWILIO_STATUS_RANK) and TWILIO_FINAL_RANK are sent from Python with each call, and the three rules are those of
  memory.moves_forward, memory.supersedes and memory.with_recorded_status (tests/test_store_contract.py checks the
  two backends against each other for every pair of statuses).
- mark_resolved(): MULTI/EXEC (HSETNX and ZADD NX). set_opt_out(): one command.
- Reads: one read-only script, or MULTI/EXEC, per call: each sees one moment. counts() is the journal's script and
  the SMS count in one pipeline (the two tags are two slots).
- prune(): scripts that each forget at most PRUNE_BATCH records, repeated until nothing is left to forget (the
  journal's, then the SMS'): Redis runs one script at a time, so a long prune must not hold every other process's
  call (the pacing scripts among them) behind it. Each script is whole; the prune as a whole is not, which changes
  nothing: what one pass leaves, the next (or the next minute's) forgets.

Timeouts. One round trip per call (prune: one per PRUNE_BATCH records), with no retrying (redis-py 6+ retries with
backoff by default): socket_connect_timeout and socket_timeout are timeout_seconds, so a call to a Redis that does not
answer (stopped with SIGSTOP, or gone behind a firewall) raises StoreError once timeout_seconds has passed on its
connect or its read; one that refuses connections raises at once. A new connection adds AUTH (when the URL has a
password) and SELECT (a database other than 0); RESP2, no HELLO, no CLIENT SETINFO, no health checks. A query string
in the URL cannot loosen any of this (ours win), and one redis-py does not know is refused. A script missing from the
server's cache (after a restart or SCRIPT FLUSH) is sent whole once (EVALSHA, then EVAL). Resolving the host name is
the system resolver's, not bounded by the timeout: use an address, or a name the resolver answers quickly.

Cost. Redis runs one script at a time, and all of a tag's keys live on one node. A write() costs Redis about 50 µs
per alert (a 1,000-alert storm's batch holds it some 50 ms): a batch of more than some 8,000 alerts would outlast a
0.5 s timeout, so the writer should keep batches below that. The status page's queries walk indexes, not records (the
200 newest firing of 20,000 alerts: about 6 ms, most of it decoding here); the scripts that return many records return
them as one cjson string, which redis-py's parser reads far faster than thousands of small replies.

Errors. Every redis-py error becomes a StoreError naming "redis at host:port" and what happened, never the URL or
the password (any trace of it is replaced, and the redis-py exception is not chained). description is the URL with
its password redacted (config.redacted_state_url).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import math
import urllib.parse
from typing import Iterable, Iterator, Mapping, Sequence

import redis
from redis.backoff import NoBackoff
from redis.connection import Connection, parse_url
from redis.exceptions import (
    AuthenticationError, ConnectionError as RedisConnectionError, DataError, NoScriptError, OutOfMemoryError,
    RedisError, TimeoutError as RedisTimeoutError,
)
from redis.retry import Retry

from ..config import redacted_state_url
from . import (
    MAX_DELIVERIES_PER_ALERT, OPEN_SMS_STATES, SMS_SENT, TWILIO_FINAL_RANK, TWILIO_STATUS_RANK, AlertRecord, Delivery,
    GroupMemory, NotificationRecord, SmsAlert, SmsMessage, StoreError, ThreadMessage, WriteBatch,
)
from .memory import checked_mapping, checked_sms

DEFAULT_PREFIX = "rcwebhook:"
DEFAULT_TIMEOUT_SECONDS = 0.5
# Records one prune script forgets at most (a few milliseconds of Redis' time), before the next script goes on.
PRUNE_BATCH = 2000
_ORDERS = ("first_received", "resolved_at")
_SMS_FIELDS = {field.name: field for field in dataclasses.fields(SmsMessage)}
_SMS_ALERT_FIELDS = tuple(field.name for field in dataclasses.fields(SmsAlert))
_SMS_FLOATS = ("created_at", "due_at", "next_attempt_at", "updated_at")
_SMS_INTEGERS = ("tier", "attempts", "segments")
# Decided by the scripts (the alerts list, and the status a callback that beat the save may raise): not sent as is.
_SMS_BY_SCRIPT = ("alerts", "twilio_status", "error_code", "sent_at")
_SMS_PLAIN = tuple(name for name in _SMS_FIELDS if name not in _SMS_BY_SCRIPT)


def _lua(source: str, *, writes: bool = True, only_deletes: bool = False) -> "_Script":
    """A script with its flags: Redis refuses one that may write while over maxmemory (before it starts); one that
    only deletes runs all the same (a full Redis must still be able to prune), and a read-only one always runs."""
    flags = "#!lua flags=no-writes" if not writes else "#!lua flags=allow-oom" if only_deletes else "#!lua"
    return _Script(f"{flags}\n{source}")


class _Script:
    """A Lua script, run by its SHA1 (sent whole when the server does not have it)."""

    def __init__(self, source: str):
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


# -- the scripts. KEYS[1] is the tag's base ("<prefix>{journal}:" or "<prefix>{sms}:"): it names the slot, and every
# key a script touches is that base and a suffix.

_CHUNKED = """
local function hmget_all(key, fields)
  local values = {}
  for start = 1, #fields, 1000 do
    local chunk = redis.call('HMGET', key, unpack(fields, start, math.min(start + 999, #fields)))
    for _, value in ipairs(chunk) do values[#values + 1] = value end
  end
  return values
end
"""

_WRITE = _lua(r"""
local J = KEYS[1]
local position = 1
local function nextarg()
  position = position + 1
  return ARGV[position - 1]
end
local max_deliveries = tonumber(nextarg())
local LATEST = {'alertname', 'labels', 'annotations', 'ends_at'}

-- First pass: every record the batch changes, staged from Redis' copy (as MemoryStore stages it). No write yet.
local staged, order = {}, {}
local function load(id)
  local record = staged[id]
  if record ~= nil then return record end
  local v = redis.call('HMGET', J .. 'a:' .. id, 'first_received', 'last_received', 'resolved_at', 'updated_at',
                       'status', 'severity', 'integration')
  if not v[1] then
    staged[id] = false
    return false
  end
  record = {first = v[1], last = v[2], resolved = v[3], updated = v[4], status = v[5], severity = v[6],
            integration = v[7], fields = {}, deliveries = {},
            was = {status = v[5], severity = v[6], integration = v[7]}}
  staged[id] = record
  order[#order + 1] = id
  return record
end

for _ = 1, tonumber(nextarg()) do
  local id, fingerprint, status, severity, integration, starts_at, received =
    ARGV[position], ARGV[position + 1], ARGV[position + 2], ARGV[position + 3], ARGV[position + 4],
    ARGV[position + 5], ARGV[position + 6]
  local latest = {}
  for k, name in ipairs(LATEST) do latest[name] = ARGV[position + 6 + k] end
  position = position + 7 + #LATEST
  local record = load(id)
  local at = tonumber(received)
  local late = false
  if not record then
    record = {first = received, last = received, updated = received, resolved = false,
              fields = {fingerprint = fingerprint, starts_at = starts_at}, deliveries = {}}
    staged[id] = record
    order[#order + 1] = id
  else
    if at < tonumber(record.first) then record.first = received end
    late = at < tonumber(record.last)  -- an older copy arriving late changes nothing but first/last_received
    if not late then record.last = received end
    if at > tonumber(record.updated) then record.updated = received end
  end
  if not late then
    record.status, record.severity, record.integration = status, severity, integration
    for name, value in pairs(latest) do record.fields[name] = value end
    if status == 'resolved' then
      if not record.resolved then record.resolved = received end
    else
      record.resolved = false
    end
  end
end

for _ = 1, tonumber(nextarg()) do
  local alert_id, delivery, at = ARGV[position], ARGV[position + 1], ARGV[position + 2]
  position = position + 3
  local record = load(alert_id)
  if record then  -- one for an unknown (pruned) record is dropped
    record.deliveries[#record.deliveries + 1] = delivery
    if tonumber(at) > tonumber(record.updated) then record.updated = at end
  end
end

local function triples()
  local items = {}
  for _ = 1, tonumber(nextarg()) do
    items[#items + 1] = {ARGV[position], ARGV[position + 1], ARGV[position + 2]}
    position = position + 3
  end
  return items
end
local notifications, groups, threads = triples(), triples(), triples()

-- Second pass: the writes.
for _, id in ipairs(order) do
  local record = staged[id]
  local key = J .. 'a:' .. id
  local fields = {'first_received', record.first, 'last_received', record.last, 'updated_at', record.updated,
                  'status', record.status, 'severity', record.severity, 'integration', record.integration}
  for name, value in pairs(record.fields) do
    fields[#fields + 1] = name
    fields[#fields + 1] = value
  end
  if record.resolved then
    fields[#fields + 1] = 'resolved_at'
    fields[#fields + 1] = record.resolved
  else
    redis.call('HDEL', key, 'resolved_at')
  end
  redis.call('HSET', key, unpack(fields))
  local was = record.was
  for _, name in ipairs({'status', 'severity', 'integration'}) do
    if was and was[name] ~= record[name] then
      redis.call('ZREM', J .. 'alerts:first:' .. name .. ':' .. was[name], id)
    end
    redis.call('ZADD', J .. 'alerts:first:' .. name .. ':' .. record[name], record.first, id)
  end
  redis.call('ZADD', J .. 'alerts:first', record.first, id)
  redis.call('ZADD', J .. 'alerts:updated', record.updated, id)
  if record.resolved then
    redis.call('ZADD', J .. 'alerts:resolved', record.resolved, id)
    redis.call('ZREM', J .. 'alerts:unresolved', id)
  else
    redis.call('ZREM', J .. 'alerts:resolved', id)
    redis.call('ZADD', J .. 'alerts:unresolved', 0, id)
  end
  local deliveries = record.deliveries
  if #deliveries > 0 then
    for start = 1, #deliveries, 1000 do
      redis.call('RPUSH', J .. 'd:' .. id, unpack(deliveries, start, math.min(start + 999, #deliveries)))
    end
    redis.call('LTRIM', J .. 'd:' .. id, -max_deliveries, -1)
  end
end
for _, item in ipairs(notifications) do  -- same id: replaced
  redis.call('HSET', J .. 'notifications', item[1], item[2])
  redis.call('ZADD', J .. 'notifications:received', item[3], item[1])
end
for _, item in ipairs(groups) do  -- same (hook_key, group_id): replaced
  redis.call('HSET', J .. 'groups', item[1], item[2])
  redis.call('ZADD', J .. 'groups:finished', item[3], item[1])
end
for _, item in ipairs(threads) do  -- the first message is the thread
  if redis.call('HSETNX', J .. 'threads', item[1], item[2]) == 1 then
    redis.call('ZADD', J .. 'threads:at', item[3], item[1])
  end
end
return #order
""")

_ALERTS = _lua(r"""
local J = KEYS[1]
local by_resolved, limit = ARGV[1] == 'resolved_at', tonumber(ARGV[2])
local NAMES = {'status', 'severity', 'integration'}
local filters = {}
for k, name in ipairs(NAMES) do
  if ARGV[1 + 2 * k] == '1' then filters[name] = ARGV[2 + 2 * k] end
end
local found = {}
local function matches(id, known)  -- known: the filter the index walked already answers
  local v
  for k, name in ipairs(NAMES) do
    if filters[name] ~= nil and name ~= known then
      v = v or redis.call('HMGET', J .. 'a:' .. id, 'status', 'severity', 'integration')
      if v[k] ~= filters[name] then return false end
    end
  end
  return true
end
local function walk(index, known)  -- newest first: the score, then the id, descending
  local start, chunk = 0, math.max(limit, 100)
  while #found < limit do
    local ids = redis.call('ZREVRANGE', index, start, start + chunk - 1)
    for _, id in ipairs(ids) do
      if matches(id, known) then
        found[#found + 1] = id
        if #found >= limit then return end
      end
    end
    if #ids < chunk then return end
    start = start + chunk
  end
end
if by_resolved then  -- resolved_at is set exactly while the status is resolved
  if filters.status == nil or filters.status == 'resolved' then walk(J .. 'alerts:resolved', 'status') end
  if filters.status ~= 'resolved' then walk(J .. 'alerts:unresolved', nil) end
else
  local index, size, known = J .. 'alerts:first', nil, nil
  for _, name in ipairs(NAMES) do
    if filters[name] ~= nil then
      local candidate = J .. 'alerts:first:' .. name .. ':' .. filters[name]
      local count = redis.call('ZCARD', candidate)
      if size == nil or count < size then index, size, known = candidate, count, name end
    end
  end
  walk(index, known)
end
local records = {}
for k, id in ipairs(found) do
  records[k] = {id, redis.call('HGETALL', J .. 'a:' .. id), redis.call('LRANGE', J .. 'd:' .. id, 0, -1)}
end
return cjson.encode(records)  -- one string: thousands of small replies cost redis-py's parser far more
""", writes=False)

_NEWEST = _lua(_CHUNKED + r"""
local ids = redis.call('ZREVRANGE', KEYS[1] .. ARGV[1], 0, tonumber(ARGV[3]) - 1)
return hmget_all(KEYS[1] .. ARGV[2], ids)
""", writes=False)

_SINCE = _lua(_CHUNKED + r"""
local fields = redis.call('ZRANGEBYSCORE', KEYS[1] .. ARGV[1], ARGV[3], '+inf')
return hmget_all(KEYS[1] .. ARGV[2], fields)
""", writes=False)

_JOURNAL_COUNTS = _lua(r"""
local J = KEYS[1]
return {redis.call('ZCARD', J .. 'alerts:updated'), redis.call('ZCARD', J .. 'notifications:received'),
        redis.call('HLEN', J .. 'groups'), redis.call('HLEN', J .. 'threads')}
""", writes=False)

_PRUNE_JOURNAL = _lua(r"""
local J = KEYS[1]
local before, keep, groups_before, budget = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local gone = 0
local function forget_alert(id)
  local key = J .. 'a:' .. id
  local v = redis.call('HMGET', key, 'status', 'severity', 'integration')
  for k, name in ipairs({'status', 'severity', 'integration'}) do
    if v[k] then redis.call('ZREM', J .. 'alerts:first:' .. name .. ':' .. v[k], id) end
  end
  for _, index in ipairs({'alerts:first', 'alerts:resolved', 'alerts:unresolved', 'alerts:updated'}) do
    redis.call('ZREM', J .. index, id)
  end
  redis.call('DEL', key, J .. 'd:' .. id)
  gone = gone + 1
end
local function forget_field(hash, index, field)
  redis.call('HDEL', J .. hash, field)
  redis.call('ZREM', J .. index, field)
end
-- Each step forgets what is older than its bound, then the oldest beyond `keep`, within the budget left.
local function prune(index, bound, beyond, forget)
  if budget <= 0 then return end
  local stale = redis.call('ZRANGEBYSCORE', J .. index, '-inf', '(' .. bound, 'LIMIT', 0, budget)
  for _, member in ipairs(stale) do forget(member) end
  budget = budget - #stale
  if beyond and budget > 0 then
    local over = redis.call('ZCARD', J .. index) - keep
    if over > 0 then
      local oldest = redis.call('ZRANGE', J .. index, 0, math.min(over, budget) - 1)
      for _, member in ipairs(oldest) do forget(member) end
      budget = budget - #oldest
    end
  end
end
prune('alerts:updated', before, true, forget_alert)
prune('notifications:received', before, true, function(id) forget_field('notifications', 'notifications:received', id) end)
prune('groups:finished', groups_before, false, function(field) forget_field('groups', 'groups:finished', field) end)
prune('threads:at', before, true, function(field) forget_field('threads', 'threads:at', field) end)
return {gone, budget <= 0 and 1 or 0}
""", only_deletes=True)

# Taking one SMS out of every index (S is the {sms} keys' prefix): when it is replaced, and when it is pruned.
_FORGET_SMS_INDEXES = r"""
local function forget_indexes(id)
  local key = S .. 'm:' .. id
  local sid = redis.call('HGET', key, 'sid')
  if sid and sid ~= '' then redis.call('SREM', S .. 'sid:' .. sid, id) end
  for _, alert_id in ipairs(redis.call('SMEMBERS', S .. 'ma:' .. id)) do
    redis.call('SREM', S .. 'alert:' .. alert_id, id)
  end
  for _, index in ipairs({'sms:updated', 'sms:open', 'sms:final', 'sms:sent'}) do
    redis.call('ZREM', S .. index, id)
  end
end
"""

# The SMS scripts' shared part: the call's header (ranks, final rank, open states, the sent state), one message
# read from the arguments, and putting one in its hash and indexes.
_SMS_COMMON = r"""
local S = KEYS[1]
""" + _FORGET_SMS_INDEXES + r"""
local position = 1
local function nextarg()
  position = position + 1
  return ARGV[position - 1]
end
local ranks = cjson.decode(nextarg())
local final_rank = tonumber(nextarg())
local open = {}
for _, state in ipairs(cjson.decode(nextarg())) do open[state] = true end
local sent_state = nextarg()
local function rank(status)
  return ranks[status] or 0
end
-- memory.moves_forward: ranks higher, or alike and the held one is not final.
local function moves_forward(status, held_status)
  local r, h = rank(status), rank(held_status)
  return r > h or (r == h and h < final_rank)
end
local function optional()
  local value, present = nextarg(), nextarg()
  if present == '1' then return value end
  return false
end
local function read_message()
  local m = {id = nextarg(), sid = nextarg(), twilio_status = nextarg()}
  m.error_code = optional()
  m.sent_at = optional()
  m.status, m.next_attempt_at, m.updated_at = nextarg(), nextarg(), nextarg()
  m.fields = {}
  for _ = 1, tonumber(nextarg()) do
    m.fields[#m.fields + 1] = nextarg()
    m.fields[#m.fields + 1] = nextarg()
  end
  m.alerts = {}
  for _ = 1, tonumber(nextarg()) do
    m.alerts[#m.alerts + 1] = {id = nextarg(), pair = nextarg(), json = nextarg()}
  end
  return m
end
-- Store (or replace) the message with these of its alerts; memory.with_recorded_status: a status recorded for its
-- sid that ranks higher than the one given is the one stored. Returns the status and error code stored.
local function put(m, alerts)
  local key = S .. 'm:' .. m.id
  forget_indexes(m.id)
  redis.call('DEL', key, S .. 'ma:' .. m.id)
  local twilio_status, error_code = m.twilio_status, m.error_code
  if m.sid ~= '' then
    local held = redis.call('HMGET', S .. 'status:' .. m.sid, 'status', 'error_code')
    if held[1] and rank(held[1]) > rank(twilio_status) then twilio_status, error_code = held[1], held[2] end
  end
  local fields, jsons = {}, {}
  for k, value in ipairs(m.fields) do fields[k] = value end
  for k, alert in ipairs(alerts) do jsons[k] = alert.json end
  for _, pair in ipairs({{'alerts', '[' .. table.concat(jsons, ',') .. ']'}, {'twilio_status', twilio_status},
                         {'error_code', error_code}, {'sent_at', m.sent_at}}) do
    if pair[2] then
      fields[#fields + 1] = pair[1]
      fields[#fields + 1] = pair[2]
    end
  end
  redis.call('HSET', key, unpack(fields))
  redis.call('ZADD', S .. 'sms:updated', m.updated_at, m.id)
  if open[m.status] then
    redis.call('ZADD', S .. 'sms:open', m.next_attempt_at, m.id)
  else
    redis.call('ZADD', S .. 'sms:final', m.updated_at, m.id)
  end
  if m.status == sent_state and m.sent_at then redis.call('ZADD', S .. 'sms:sent', m.sent_at, m.id) end
  if m.sid ~= '' then redis.call('SADD', S .. 'sid:' .. m.sid, m.id) end
  for _, alert in ipairs(alerts) do
    redis.call('SADD', S .. 'alert:' .. alert.id, m.id)
    redis.call('SADD', S .. 'ma:' .. m.id, alert.id)
  end
  return twilio_status, error_code
end
"""

_SCHEDULE_SMS = _lua(_SMS_COMMON + r"""
local at = nextarg()
local messages = {}
for _ = 1, tonumber(nextarg()) do messages[#messages + 1] = read_message() end
-- First: which pairs are new (the paged ones, and this call's own), and whether an id is taken. No write yet.
local staged, taken, added = {}, {}, {}
for index, m in ipairs(messages) do
  local fresh, positions = {}, {}
  for k, alert in ipairs(m.alerts) do
    if not staged[alert.pair] and redis.call('HEXISTS', S .. 'paged', alert.pair) == 0 then
      staged[alert.pair] = true
      fresh[#fresh + 1] = alert
      positions[#positions + 1] = k - 1
    end
  end
  if #fresh > 0 then
    if taken[m.id] or redis.call('EXISTS', S .. 'm:' .. m.id) == 1 then return {0} end
    taken[m.id] = true
    added[#added + 1] = {index = index - 1, message = m, alerts = fresh, positions = positions}
  end
end
local answer = {1}
for _, item in ipairs(added) do
  for _, alert in ipairs(item.alerts) do
    redis.call('HSET', S .. 'paged', alert.pair, at)
    redis.call('ZADD', S .. 'paged:at', at, alert.pair)
  end
  local twilio_status, error_code = put(item.message, item.alerts)
  answer[#answer + 1] = {item.index, twilio_status, error_code, item.positions}
end
return answer
""")

_SAVE_SMS = _lua(_SMS_COMMON + r"""
local messages = {}
for _ = 1, tonumber(nextarg()) do messages[#messages + 1] = read_message() end
for _, m in ipairs(messages) do put(m, m.alerts) end
return #messages
""")

_RECORD_SMS_STATUS = _lua(_SMS_COMMON + r"""
local sid, status = nextarg(), nextarg()
local error_code = optional()
local at = nextarg()
local held = redis.call('HMGET', S .. 'status:' .. sid, 'status', 'at')
-- memory.supersedes: it moves forward and, when it ranks alike, is not older.
local supersedes = not held[1] or (moves_forward(status, held[1]) and
                                   (rank(status) > rank(held[1]) or tonumber(at) >= tonumber(held[2])))
local ids = redis.call('SMEMBERS', S .. 'sid:' .. sid)
if supersedes then
  local key = S .. 'status:' .. sid
  redis.call('DEL', key)
  redis.call('HSET', key, 'status', status, 'at', at)
  if error_code then redis.call('HSET', key, 'error_code', error_code) end
  redis.call('ZADD', S .. 'statuses:at', at, sid)
  for _, id in ipairs(ids) do
    local message = S .. 'm:' .. id
    local v = redis.call('HMGET', message, 'twilio_status', 'updated_at', 'status')
    if v[2] and moves_forward(status, v[1] or '') then  -- never moves a message back
      redis.call('HSET', message, 'twilio_status', status)
      if error_code then redis.call('HSET', message, 'error_code', error_code) else redis.call('HDEL', message, 'error_code') end
      if tonumber(at) > tonumber(v[2]) then
        redis.call('HSET', message, 'updated_at', at)
        redis.call('ZADD', S .. 'sms:updated', at, id)
        if not open[v[3]] then redis.call('ZADD', S .. 'sms:final', at, id) end
      end
    end
  end
end
local messages = {}
for _, id in ipairs(ids) do messages[#messages + 1] = {id, redis.call('HGETALL', S .. 'm:' .. id)} end
return cjson.encode(messages)
""")

_READ_SMS = _lua(r"""
local S = KEYS[1]
local what = ARGV[1]
local ids
if what == 'due' then
  ids = redis.call('ZRANGEBYSCORE', S .. 'sms:open', '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
elseif what == 'open' then
  ids = redis.call('ZRANGE', S .. 'sms:open', 0, -1)
elseif what == 'recent' then
  ids = redis.call('ZREVRANGE', S .. 'sms:updated', 0, tonumber(ARGV[2]) - 1)
elseif what == 'alert' then
  ids = redis.call('SMEMBERS', S .. 'alert:' .. ARGV[2])
elseif what == 'sid' then
  ids = redis.call('SMEMBERS', S .. 'sid:' .. ARGV[2])
end
local messages = {}
for _, id in ipairs(ids) do
  local key = S .. 'm:' .. id
  if what ~= 'open' or ARGV[2] ~= '1' or redis.call('HGET', key, 'recipient') == ARGV[3] then
    messages[#messages + 1] = {id, redis.call('HGETALL', key)}
  end
end
return cjson.encode(messages)
""", writes=False)

_SENT_TIMES = _lua(r"""
local S = KEYS[1]
local sent = redis.call('ZRANGEBYSCORE', S .. 'sms:sent', ARGV[1], '+inf', 'WITHSCORES')
local times = {}
for k = 1, #sent, 2 do
  if ARGV[2] ~= '1' or redis.call('HGET', S .. 'm:' .. sent[k], 'recipient') == ARGV[3] then
    times[#times + 1] = sent[k + 1]
  end
end
return times
""", writes=False)

_PRUNE_SMS = _lua(r"""
local S = KEYS[1]
""" + _FORGET_SMS_INDEXES + r"""
local before, keep, budget = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local function forget_message(id)
  forget_indexes(id)
  redis.call('DEL', S .. 'm:' .. id, S .. 'ma:' .. id)
end
local function stale(index)
  if budget <= 0 then return {} end
  local members = redis.call('ZRANGEBYSCORE', S .. index, '-inf', '(' .. before, 'LIMIT', 0, budget)
  budget = budget - #members
  return members
end
-- Final messages (open ones are still to be sent: never pruned), by age, then the least recently updated beyond keep.
for _, id in ipairs(stale('sms:final')) do forget_message(id) end
if budget > 0 then
  local over = redis.call('ZCARD', S .. 'sms:final') - keep
  if over > 0 then
    local oldest = redis.call('ZRANGE', S .. 'sms:final', 0, math.min(over, budget) - 1)
    for _, id in ipairs(oldest) do forget_message(id) end
    budget = budget - #oldest
  end
end
for _, name in ipairs({'paged', 'resolved'}) do
  for _, member in ipairs(stale(name .. ':at')) do
    redis.call('HDEL', S .. name, member)
    redis.call('ZREM', S .. name .. ':at', member)
  end
end
-- Statuses of sids no message has (a known sid's status is kept however old: a stale save must not lower it).
if budget > 0 then
  for _, sid in ipairs(redis.call('ZRANGEBYSCORE', S .. 'statuses:at', '-inf', '(' .. before)) do
    if budget > 0 and redis.call('SCARD', S .. 'sid:' .. sid) == 0 then
      redis.call('DEL', S .. 'status:' .. sid)
      redis.call('ZREM', S .. 'statuses:at', sid)
      budget = budget - 1
    end
  end
end
return budget <= 0 and 1 or 0
""", only_deletes=True)

_CHECK = _lua("return redis.call('PING')", writes=False)


def _number(value) -> str:
    """A time as the scripts get it: Python's repr, which float() reads back exactly."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{number} is not a time")
    return repr(number)


def _bound(value) -> str:
    """A query's bound: a time, or ±infinity."""
    number = float(value)
    if math.isnan(number):
        raise ValueError("nan is not a time")
    if math.isinf(number):
        return "+inf" if number > 0 else "-inf"
    return repr(number)


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":"))


def _text(value: bytes) -> str:
    return value.decode("utf-8", "surrogatepass")


def _pairs(flat: list[str]) -> dict[str, str]:
    items = iter(flat)
    return dict(zip(items, items))


def _field(*parts) -> str:
    """A hash field naming a tuple (JSON: unambiguous whatever the parts hold)."""
    return _json(list(parts))


def _optional(value) -> list[str]:
    return ["", "0"] if value is None else [value, "1"]


def _where(url: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    host = parsed.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"redis at {host}:{parsed.port or 6379}"


class RedisStore:
    """One Redis (or a Redis Cluster node's slot per tag), shared by every process that opens the same URL and prefix.

    Opening connects to nothing: a Redis that does not answer yet is not an error here, each call raises StoreError
    until it does (check() asks now)."""

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS):
        if not url.startswith(("redis://", "rediss://")):
            raise StoreError("not a redis:// or rediss:// URL")
        try:
            parsed = urllib.parse.urlsplit(url)
            parsed.port  # noqa: B018 - urllib checks the port only when asked
            options = parse_url(url)
        except ValueError:
            raise StoreError("the redis URL cannot be read (not shown: it may hold a password)") from None
        if not parsed.hostname:
            raise StoreError("the redis URL needs a host: redis://host:6379/0 (not shown: it may hold a password)")
        database = parsed.path.strip("/")
        if database and not database.isdigit():
            raise StoreError("the redis URL's path must be a database number such as /0 (not shown)")
        if any(character in prefix for character in "{}"):
            raise StoreError(f"the key prefix {prefix!r} may not hold braces (the keys' hash tags are the store's)")
        self.description = redacted_state_url(url)
        self.prefix = prefix
        self.timeout_seconds = float(timeout_seconds)
        self._where = _where(url)
        self._secrets = tuple(secret for secret in (options.get("password"), parsed.password) if secret)
        self._journal = f"{prefix}{{journal}}:"
        self._sms = f"{prefix}{{sms}}:"
        self._closed = False
        connection_class = options.pop("connection_class", Connection)
        accepted = {"max_connections", *(name for cls in connection_class.__mro__ if "__init__" in vars(cls)
                                         for name in inspect.signature(cls.__init__).parameters)}
        unknown = sorted(name for name in options if name not in accepted)
        if unknown:
            raise StoreError(f"the redis URL has options redis-py does not know: {', '.join(unknown)}")
        # Ours win over a query string's: the timeouts, no retrying, and what the scripts and the parsing expect.
        options.update(
            socket_timeout=self.timeout_seconds, socket_connect_timeout=self.timeout_seconds,
            retry=Retry(NoBackoff(), 0), retry_on_timeout=False, retry_on_error=[], health_check_interval=0,
            protocol=2, encoding="utf-8", encoding_errors="surrogatepass", decode_responses=False, driver_info=None,
        )
        self._pool = redis.ConnectionPool(connection_class=connection_class, **options)
        self._client = redis.Redis(connection_pool=self._pool)
        self._ranks = _json(dict(TWILIO_STATUS_RANK))
        self._sms_header = [self._ranks, str(TWILIO_FINAL_RANK), _json(list(OPEN_SMS_STATES)), SMS_SENT]

    @property
    def client(self):
        """The redis-py client with the store's bounds (timeouts, no retrying), for shared.py's coordination."""
        return self._client

    # -- plumbing

    def _scrubbed(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "<redacted>")
        return text

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self._where}: the store is closed")

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Every failure as a StoreError naming host:port only (never the URL, never the password)."""
        self._check_open()
        try:
            yield
        except StoreError:
            raise
        except RedisTimeoutError:
            raise StoreError(f"{self._where}: no answer within {self.timeout_seconds:g} s") from None
        except AuthenticationError as error:
            raise StoreError(f"{self._where}: authentication refused: {self._scrubbed(str(error))}") from None
        except RedisConnectionError as error:
            raise StoreError(f"{self._where}: {self._scrubbed(str(error)) or 'connection failed'}") from None
        except OutOfMemoryError as error:
            raise StoreError(f"{self._where}: Redis is full, nothing of the call was kept (maxmemory with "
                             f"noeviction): {self._scrubbed(str(error))}") from None
        except DataError as error:
            raise StoreError(f"{self._where}: a record cannot be stored: {self._scrubbed(str(error))}") from None
        except RedisError as error:
            message = self._scrubbed(str(error)).splitlines()[0] if str(error) else type(error).__name__
            raise StoreError(f"{self._where}: {message}") from None
        except (TypeError, ValueError) as error:  # a record that cannot be encoded, or one that cannot be read
            raise StoreError(f"{self._where}: a record cannot be stored or read: {error}") from None

    @contextlib.contextmanager
    def _records(self) -> Iterator[None]:
        """Building a call's arguments: what cannot be stored is refused before anything is sent."""
        self._check_open()
        try:
            yield
        except (TypeError, ValueError) as error:
            raise StoreError(f"{self._where}: a record cannot be stored: {error}") from None

    def _run(self, script: _Script, base: str, args: Sequence) -> object:
        """One script, in one round trip (two when the server has to be sent it first)."""
        with self._errors():
            try:
                return self._client.evalsha(script.sha, 1, base, *args)
            except NoScriptError:
                return self._client.eval(script.source, 1, base, *args)

    def check(self) -> None:
        """Ask Redis now: StoreError unless it answers and runs this store's scripts (Redis 7.0 or later)."""
        try:
            self._run(_CHECK, self._journal, ())
        except StoreError as error:
            if "compiling script" in str(error) or "Unexpected" in str(error):
                raise StoreError(f"{self._where}: Redis 7.0 or later is needed (it runs no script with flags)") \
                    from None
            raise

    # -- the journal

    def write(self, batch: WriteBatch) -> None:
        with self._records():
            args: list = [MAX_DELIVERIES_PER_ALERT, len(batch.alerts)]
            for seen in batch.alerts:
                args += [seen.id, seen.fingerprint, seen.status, seen.severity, seen.integration, seen.starts_at,
                         _number(seen.received_at), seen.alertname, _json(checked_mapping(seen.labels)),
                         _json(checked_mapping(seen.annotations)), seen.ends_at]
            args.append(len(batch.deliveries))
            for delivery in batch.deliveries:
                args += [delivery.alert_id, _json([delivery.alert_id, delivery.destination, _float(delivery.at),
                                                   delivery.outcome, delivery.status, delivery.message_id]),
                         _number(delivery.at)]
            args.append(len(batch.notifications))
            for record in batch.notifications:
                args += [record.id, _json([record.id, record.request_id, record.integration, record.group_key,
                                           record.receiver, record.firing, record.resolved, record.status_code,
                                           record.ms, _float(record.received),
                                           checked_mapping(record.destinations)]),
                         _number(record.received)]
            args.append(len(batch.groups))
            for memory in batch.groups:
                group_id, dedup_key = bytes(memory.group_id), bytes(memory.dedup_key)
                args += [_field(memory.hook_key, group_id.hex()),
                         _json([memory.hook_key, group_id.hex(), dedup_key.hex(), memory.state, memory.status,
                                memory.reason, _float(memory.finished_at)]),
                         _number(memory.finished_at)]
            args.append(len(batch.threads))
            for thread in batch.threads:
                args += [_field(thread.hook_key, thread.alert_id),
                         _json([thread.hook_key, thread.alert_id, thread.message_id, _float(thread.at)]),
                         _number(thread.at)]
        if batch:
            self._run(_WRITE, self._journal, args)

    def load_groups(self, finished_since: float) -> list[GroupMemory]:
        with self._records():
            since = _bound(finished_since)
        values = self._run(_SINCE, self._journal, ["groups:finished", "groups", since])
        with self._errors():
            found = [_group(json.loads(_text(value))) for value in values if value is not None]
        return sorted(found, key=lambda memory: (memory.finished_at, memory.hook_key, memory.group_id))

    def load_threads(self, since: float) -> list[ThreadMessage]:
        with self._records():
            bound = _bound(since)
        values = self._run(_SINCE, self._journal, ["threads:at", "threads", bound])
        with self._errors():
            found = [ThreadMessage(*json.loads(_text(value))) for value in values if value is not None]
        return sorted(found, key=lambda thread: (thread.at, thread.hook_key, thread.alert_id))

    def alerts(
        self, *, status: str | None = None, severity: str | None = None, integration: str | None = None,
        limit: int = 100, newest_by: str = "first_received",
    ) -> list[AlertRecord]:
        if newest_by not in _ORDERS:
            raise StoreError(f"cannot order alerts by {newest_by!r}")
        if limit <= 0:
            with self._errors():
                return []
        args = [newest_by, int(limit)]
        for value in (status, severity, integration):
            args += ["0", ""] if value is None else ["1", value]
        found = self._run(_ALERTS, self._journal, args)
        with self._errors():
            return [_alert(alert_id, fields, deliveries) for alert_id, fields, deliveries in _listed(found) if fields]

    def alert(self, alert_id: str) -> AlertRecord | None:
        with self._errors():
            pipe = self._client.pipeline(transaction=True)
            pipe.hgetall(f"{self._journal}a:{alert_id}")
            pipe.lrange(f"{self._journal}d:{alert_id}", 0, -1)
            fields, deliveries = pipe.execute()
            if not fields:
                return None
            return _alert(alert_id, [_text(item) for pair in fields.items() for item in pair],
                          [_text(item) for item in deliveries])

    def notifications(self, *, limit: int = 100) -> list[NotificationRecord]:
        if limit <= 0:
            with self._errors():
                return []
        values = self._run(_NEWEST, self._journal, ["notifications:received", "notifications", int(limit)])
        with self._errors():
            return [_notification(json.loads(_text(value))) for value in values if value is not None]

    def prune(self, *, updated_before: float, max_alerts: int, groups_finished_before: float) -> int:
        with self._records():
            before, groups_before, keep = _bound(updated_before), _bound(groups_finished_before), max(max_alerts, 0)
        gone, more = 0, True
        while more:
            removed, more = self._run(_PRUNE_JOURNAL, self._journal, [before, keep, groups_before, PRUNE_BATCH])
            gone += int(removed)
        more = True
        while more:
            more = self._run(_PRUNE_SMS, self._sms, [before, keep, PRUNE_BATCH])
        return gone

    def counts(self) -> Mapping[str, int]:
        def run(journal_counts) -> list:
            pipe = self._client.pipeline(transaction=False)
            journal_counts(pipe)
            pipe.zcard(f"{self._sms}sms:updated")
            return pipe.execute()

        with self._errors():
            try:
                (alerts, notifications, groups, threads), sms = run(
                    lambda pipe: pipe.evalsha(_JOURNAL_COUNTS.sha, 1, self._journal))
            except NoScriptError:
                (alerts, notifications, groups, threads), sms = run(
                    lambda pipe: pipe.eval(_JOURNAL_COUNTS.source, 1, self._journal))
        return {"alerts": alerts, "notifications": notifications, "groups": groups, "threads": threads, "sms": sms}

    # -- SMS

    def _message_args(self, message: SmsMessage) -> list:
        args = [message.id, message.sid, message.twilio_status,
                *_optional(None if message.error_code is None else str(int(message.error_code))),
                *_optional(None if message.sent_at is None else _number(message.sent_at)),
                message.status, _number(message.next_attempt_at), _number(message.updated_at), len(_SMS_PLAIN)]
        for name in _SMS_PLAIN:
            args += [name, _sms_value(name, getattr(message, name))]
        args.append(len(message.alerts))
        for alert in message.alerts:
            args += [alert.id, _field(message.recipient, message.kind, alert.id),
                     _json({name: _plain(getattr(alert, name)) for name in _SMS_ALERT_FIELDS})]
        return args

    def schedule_sms(self, messages: Sequence[SmsMessage], at: float) -> list[SmsMessage]:
        with self._records():
            checked = [checked_sms(message) for message in messages]
            args = [*self._sms_header, _number(at), len(checked)]
            for message in checked:
                args += self._message_args(message)
        if not checked:
            return []
        answer = self._run(_SCHEDULE_SMS, self._sms, args)
        if answer[0] == 0:
            raise StoreError(f"{self._where}: an SMS with this id is already stored")
        added = []
        with self._errors():
            for index, twilio_status, error_code, positions in answer[1:]:
                message = checked[int(index)]
                added.append(dataclasses.replace(
                    message, alerts=tuple(message.alerts[int(k)] for k in positions),
                    twilio_status=_text(twilio_status), error_code=None if error_code is None else int(error_code)))
        return added

    def save_sms(self, messages: Sequence[SmsMessage]) -> None:
        with self._records():
            checked = [checked_sms(message) for message in messages]
            args = [*self._sms_header, len(checked)]
            for message in checked:
                args += self._message_args(message)
        if checked:
            self._run(_SAVE_SMS, self._sms, args)

    def _read_sms(self, *args) -> list[SmsMessage]:
        found = self._run(_READ_SMS, self._sms, args)
        with self._errors():
            return [_sms(_pairs(fields)) for _, fields in _listed(found) if fields]

    def due_sms(self, now: float, *, limit: int = 100) -> list[SmsMessage]:
        with self._records():
            bound = _bound(now)
        if limit <= 0:
            with self._errors():
                return []
        return self._read_sms("due", bound, int(limit))

    def open_sms(self, *, recipient: str | None = None) -> list[SmsMessage]:
        return self._read_sms("open", *(["0", ""] if recipient is None else ["1", recipient]))

    def sms(self, sms_id: str) -> SmsMessage | None:
        with self._errors():
            fields = self._client.hgetall(f"{self._sms}m:{sms_id}")
            return _sms({_text(name): _text(value) for name, value in fields.items()}) if fields else None

    def sms_by_sid(self, sid: str) -> SmsMessage | None:
        if not sid:  # "" is no sid
            with self._errors():
                return None
        return min(self._read_sms("sid", sid), key=_by_creation, default=None)

    def sms_for_alert(self, alert_id: str) -> list[SmsMessage]:
        return sorted(self._read_sms("alert", alert_id), key=_by_creation)

    def recent_sms(self, *, limit: int = 100) -> list[SmsMessage]:
        if limit <= 0:
            with self._errors():
                return []
        return self._read_sms("recent", int(limit))

    def sms_sent_times(self, since: float, *, recipient: str | None = None) -> list[float]:
        with self._records():
            bound = _bound(since)
        times = self._run(_SENT_TIMES, self._sms, [bound, *(["0", ""] if recipient is None else ["1", recipient])])
        with self._errors():
            return [float(value) for value in times]

    def record_sms_status(self, sid: str, status: str, error_code: int | None, at: float) -> SmsMessage | None:
        with self._records():
            args = [*self._sms_header, sid, status,
                    *_optional(None if error_code is None else str(int(error_code))), _number(at)]
        if not sid:  # not a Twilio sid: nothing to apply it to, ever
            with self._errors():
                return None
        found = self._run(_RECORD_SMS_STATUS, self._sms, args)
        with self._errors():
            messages = [_sms(_pairs(fields)) for _, fields in _listed(found) if fields]
        return min(messages, key=_by_creation, default=None)

    def mark_resolved(self, alert_ids: Sequence[str], at: float) -> None:
        with self._records():
            when = _number(at)
        with self._errors():
            if not alert_ids:
                return
            pipe = self._client.pipeline(transaction=True)
            for alert_id in alert_ids:  # the first time is kept
                pipe.hsetnx(f"{self._sms}resolved", alert_id, when)
                pipe.zadd(f"{self._sms}resolved:at", {alert_id: when}, nx=True)
            pipe.execute()

    def resolved_among(self, alert_ids: Sequence[str]) -> set[str]:
        ids = list(dict.fromkeys(alert_ids))
        with self._errors():
            if not ids:
                return set()
            values = self._client.hmget(f"{self._sms}resolved", ids)
            return {alert_id for alert_id, value in zip(ids, values) if value is not None}

    def set_opt_out(self, recipient: str, at: float | None) -> None:
        with self._records():
            when = None if at is None else _number(at)
        with self._errors():
            if when is None:
                self._client.hdel(f"{self._sms}opt_outs", recipient)
            else:  # a later STOP (a retry refused again) replaces the earlier: the wait starts anew from it
                self._client.hset(f"{self._sms}opt_outs", recipient, when)

    def opt_outs(self) -> Mapping[str, float]:
        with self._errors():
            return {_text(name): float(value) for name, value in self._client.hgetall(f"{self._sms}opt_outs").items()}

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(RedisError, OSError):
            self._pool.disconnect()


# -- records from what Redis holds


def _float(value) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{number} is not a time")
    return number


def _plain(value):
    return dict(value) if isinstance(value, Mapping) else value


def _listed(reply: bytes) -> list:
    """A script's cjson-encoded list (an empty Lua table comes as {})."""
    return json.loads(_text(reply)) or []


def _alert(alert_id: str, flat: list[str], deliveries: Iterable[str]) -> AlertRecord:
    fields = _pairs(flat)
    resolved_at = fields.get("resolved_at")
    return AlertRecord(
        id=alert_id, fingerprint=fields["fingerprint"], alertname=fields["alertname"], status=fields["status"],
        severity=fields["severity"], integration=fields["integration"], labels=json.loads(fields["labels"]),
        annotations=json.loads(fields["annotations"]), starts_at=fields["starts_at"], ends_at=fields["ends_at"],
        first_received=float(fields["first_received"]), last_received=float(fields["last_received"]),
        resolved_at=None if resolved_at is None else float(resolved_at), updated_at=float(fields["updated_at"]),
        deliveries=tuple(Delivery(*json.loads(item)) for item in deliveries or ()),
    )


def _notification(values: list) -> NotificationRecord:
    return NotificationRecord(*values[:10], destinations=values[10])


def _group(values: list) -> GroupMemory:
    hook_key, group_id, dedup_key, state, status, reason, finished_at = values
    return GroupMemory(hook_key=hook_key, group_id=bytes.fromhex(group_id), dedup_key=bytes.fromhex(dedup_key),
                       state=state, status=status, reason=reason, finished_at=finished_at)


def _sms_value(name: str, value) -> str:
    if name in _SMS_FLOATS:
        return _number(value)
    if name in _SMS_INTEGERS:
        return str(int(value))
    if name == "check_silences":
        return "1" if value else "0"
    if not isinstance(value, str):
        raise TypeError(f"{name} must be text")
    return value


def _sms(fields: Mapping[str, str]) -> SmsMessage:
    values: dict = {}
    for name in _SMS_FIELDS:
        value = fields.get(name)
        if name == "alerts":
            values[name] = tuple(SmsAlert(**{key: item for key, item in alert.items() if key in _SMS_ALERT_FIELDS})
                                 for alert in json.loads(value))
        elif name in _SMS_FLOATS:
            values[name] = float(value)
        elif name in _SMS_INTEGERS:
            values[name] = int(value)
        elif name == "check_silences":
            values[name] = value == "1"
        elif name == "error_code":
            values[name] = None if value is None else int(value)
        elif name == "sent_at":
            values[name] = None if value is None else float(value)
        else:
            values[name] = value
    return SmsMessage(**values)


def _by_creation(message: SmsMessage) -> tuple[float, str]:
    return message.created_at, message.id
