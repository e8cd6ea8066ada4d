//! The Lua scripts that change a partition's state. Every key a script
//! touches belongs to one partition (one hash tag), so each runs in one slot
//! and a Redis Cluster serves it.
//!
//! Writes an owner makes are fenced: `KEYS[1]` is the partition's lease and
//! `ARGV[1]` the token (`node epoch`) it was granted; a node whose lease
//! ran out, or was taken over, is refused (`HOOKLINE_FENCED`) and can never
//! commit over the new owner.

use redis::Script;

/// Refuses the script unless the caller holds the lease.
macro_rules! fenced {
    ($body:expr) => {
        concat!(
            "if redis.call('GET', KEYS[1]) ~= ARGV[1] then ",
            "return redis.error_reply('HOOKLINE_FENCED this node no longer owns the partition') end\n",
            $body
        )
    };
}

/// Sets `now`, Redis's clock in milliseconds, before the body: membership
/// and due times use it, never a node's own clock.
macro_rules! with_redis_now {
    ($body:expr) => {
        concat!(
            "local t = redis.call('TIME')\n",
            "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n",
            $body
        )
    };
}

/// The scripts, loaded once per store.
#[derive(Debug)]
pub(crate) struct Scripts {
    /// KEYS lease, epoch; ARGV node, lease_ms → the new token (a string),
    /// or, when another node holds the lease, the milliseconds it has left
    /// (an integer; -1 for a lease without expiry).
    pub acquire: Script,
    /// KEYS lease; ARGV token, lease_ms → 1 renewed, 0 lost.
    pub renew: Script,
    /// KEYS lease; ARGV token → 1 released, 0 not held under the token.
    pub release: Script,
    /// KEYS nodes, generation, swaps; ARGV node, ttl_ms →
    /// Redis's time (ms), the swaps ('' for none), then each live node
    /// (heartbeat within ttl_ms by Redis's clock, this one included) and
    /// its last heartbeat; a joining node, or one found gone, bumps the
    /// generation.
    pub heartbeat: Script,
    /// KEYS nodes; ARGV ttl_ms → the live nodes (read only).
    pub live: Script,
    /// KEYS nodes, generation, reports; ARGV node, report, ttl_ms: records
    /// this node's report, drops those of nodes no longer live → the
    /// generation, then each live node and its report ('' for none yet).
    pub exchange: Script,
    /// KEYS inbox; ARGV group, consumer → removes the consumer if it holds
    /// no entry, checked and done at once (a read could hand it one
    /// between a check and a separate delete, and deleting drops what it
    /// holds).
    pub forget_consumer: Script,
    /// KEYS lease, inbox, progress, deliveries, events, seq; ARGV token,
    /// group, then the marks (count, then id, consumed, complete each),
    /// the retired key ('' for none: a split replaces it, and is refused
    /// when it is gone), and the deliveries (count, then key, record,
    /// events each).
    pub commit: Script,
    /// KEYS lease, inbox; ARGV token, group, id: a replay notice read.
    pub ack: Script,
    /// KEYS lease, deliveries, events, due; ARGV token, key, record,
    /// with_events ('1'/'0'), events, and the milliseconds until the next
    /// attempt ('' for none), kept as a due time by Redis's clock.
    pub update: Script,
    /// KEYS lease, deliveries, events, due; ARGV token, key.
    pub delivered: Script,
    /// KEYS lease, deliveries, events, dead, due; ARGV token, key, dead
    /// meta, events → 1, or 0 when the delivery is gone (delivered or
    /// dead-lettered by another owner meanwhile).
    pub dead_letter: Script,
    /// KEYS dead, deliveries, inbox, seq; ARGV key, record → 1 requeued,
    /// 0 gone.
    pub requeue: Script,
    /// KEYS dead, events; ARGV keys → how many went.
    pub purge: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            acquire: Script::new(
                "local left = redis.call('PTTL', KEYS[1])
                 if left ~= -2 then return left end
                 local token = ARGV[1] .. ' ' .. redis.call('INCR', KEYS[2])
                 redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
                 return token",
            ),
            renew: Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then
                   redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
                 return 0",
            ),
            release: Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then
                   redis.call('DEL', KEYS[1]) return 1 end
                 return 0",
            ),
            heartbeat: Script::new(with_redis_now!(
                "local ttl = tonumber(ARGV[2])
                 local known = redis.call('ZSCORE', KEYS[1], ARGV[1])
                 redis.call('ZADD', KEYS[1], now, ARGV[1])
                 local gone = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
                 if (not known) or gone > 0 then redis.call('INCR', KEYS[2]) end
                 local live = redis.call('ZRANGEBYSCORE', KEYS[1], now - ttl, '+inf', 'WITHSCORES')
                 table.insert(live, 1, redis.call('GET', KEYS[3]) or '')
                 table.insert(live, 1, tostring(now))
                 return live"
            )),
            live: Script::new(with_redis_now!(
                "return redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf')"
            )),
            exchange: Script::new(with_redis_now!(
                "redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
                 local live = redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[3]), '+inf')
                 local is_live = {}
                 for _, n in ipairs(live) do is_live[n] = true end
                 for _, n in ipairs(redis.call('HKEYS', KEYS[3])) do
                   if not is_live[n] and n ~= ARGV[1] then redis.call('HDEL', KEYS[3], n) end
                 end
                 local out = {redis.call('GET', KEYS[2]) or '0'}
                 for _, n in ipairs(live) do
                   table.insert(out, n)
                   table.insert(out, redis.call('HGET', KEYS[3], n) or '')
                 end
                 return out"
            )),
            forget_consumer: Script::new(
                "if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
                   return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
                 end
                 return -1",
            ),
            commit: Script::new(fenced!(
                "local marks = tonumber(ARGV[3])
                 local retired = ARGV[4 + 3 * marks]
                 if retired ~= '' and redis.call('HEXISTS', KEYS[4], retired) == 0 then
                   return redis.error_reply('HOOKLINE_FENCED the delivery split here is gone')
                 end
                 local i = 4
                 for _ = 1, marks do
                   local id, consumed, complete = ARGV[i], ARGV[i + 1], ARGV[i + 2]; i = i + 3
                   if complete == '1' then
                     redis.call('XACK', KEYS[2], ARGV[2], id)
                     redis.call('XDEL', KEYS[2], id)
                     redis.call('HDEL', KEYS[3], id)
                   elseif tonumber(consumed) > tonumber(redis.call('HGET', KEYS[3], id) or '0') then
                     redis.call('HSET', KEYS[3], id, consumed)
                   end
                 end
                 i = i + 1
                 if retired ~= '' then
                   redis.call('HDEL', KEYS[4], retired)
                   redis.call('HDEL', KEYS[5], retired)
                 end
                 local deliveries = tonumber(ARGV[i]); i = i + 1
                 for _ = 1, deliveries do
                   local seq = redis.call('INCR', KEYS[6])
                   redis.call('HSET', KEYS[4], ARGV[i], seq .. '|' .. ARGV[i + 1])
                   redis.call('HSET', KEYS[5], ARGV[i], ARGV[i + 2])
                   i = i + 3
                 end
                 return 1"
            )),
            ack: Script::new(fenced!(
                "redis.call('XACK', KEYS[2], ARGV[2], ARGV[3])
                 redis.call('XDEL', KEYS[2], ARGV[3])
                 return 1"
            )),
            update: Script::new(fenced!(with_redis_now!(
                "local old = redis.call('HGET', KEYS[2], ARGV[2])
                 if not old then return 0 end
                 local seq = string.match(old, '^(%d+)|')
                 redis.call('HSET', KEYS[2], ARGV[2], seq .. '|' .. ARGV[3])
                 if ARGV[4] == '1' then redis.call('HSET', KEYS[3], ARGV[2], ARGV[5]) end
                 if ARGV[6] ~= '' then redis.call('HSET', KEYS[4], ARGV[2], now + tonumber(ARGV[6])) end
                 return 1"
            ))),
            delivered: Script::new(fenced!(
                "redis.call('HDEL', KEYS[2], ARGV[2])
                 redis.call('HDEL', KEYS[3], ARGV[2])
                 redis.call('HDEL', KEYS[4], ARGV[2])
                 return 1"
            )),
            dead_letter: Script::new(fenced!(
                "if redis.call('HDEL', KEYS[2], ARGV[2]) == 0 then return 0 end
                 redis.call('HDEL', KEYS[5], ARGV[2])
                 if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 0 then
                   redis.call('HSET', KEYS[3], ARGV[2], ARGV[4])
                 end
                 redis.call('HSET', KEYS[4], ARGV[2], ARGV[3])
                 return 1"
            )),
            requeue: Script::new(
                "if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
                 local seq = redis.call('INCR', KEYS[4])
                 redis.call('HSET', KEYS[2], ARGV[1], seq .. '|' .. ARGV[2])
                 redis.call('XADD', KEYS[3], '*', 'k', 'r', 'key', ARGV[1])
                 return 1",
            ),
            purge: Script::new(
                "local n = 0
                 for i = 1, #ARGV do
                   if redis.call('HDEL', KEYS[1], ARGV[i]) == 1 then
                     redis.call('HDEL', KEYS[2], ARGV[i])
                     n = n + 1
                   end
                 end
                 return n",
            ),
        }
    }
}
