/**
 * Lua scripts, named with their key count (BullMQ's convention). Each header
 * documents KEYS, ARGV and the reply. Atomic steps live here, not in round
 * trips.
 */

/**
 * deadLetter-2: moves one stream entry to the dead-letter stream and
 * acknowledges it, atomically.
 *
 * KEYS[1] the event stream; KEYS[2] the dead-letter stream (same hash slot)
 * ARGV[1] consumer group; ARGV[2] entry id; ARGV[3] the original frame, untouched;
 * ARGV[4] dead-letter info (JSON); ARGV[5] approximate MAXLEN of the dead-letter stream
 * Reply: the id of the new dead-letter entry.
 */
export const DEAD_LETTER_2 = `
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*',
  'e', ARGV[3], 'i', ARGV[4], 'src', KEYS[1], 'sid', ARGV[2])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return id
`;

/**
 * redrive-2: re-publishes one dead letter to an event stream and deletes the
 * dead letter, atomically, so a redrive is never lost nor doubled.
 *
 * KEYS[1] the dead-letter stream; KEYS[2] the event stream (same hash slot)
 * ARGV[1] dead-letter id; ARGV[2] the frame to publish; ARGV[3] publish time (ms);
 * ARGV[4] approximate MAXLEN of the event stream
 * Reply: the new entry id, or false when the dead letter no longer exists.
 */
export const REDRIVE_2 = `
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return false end
return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'e', ARGV[2], 't', ARGV[3])
`;

/**
 * publish-5: appends a batch of events to the five priority streams of one
 * partition in one command, then trims each stream it touched, never past
 * entries a consumer group has not read yet (up to a hard cap).
 *
 * One command per batch instead of one XADD per event: the producer builds one
 * request and reads one small reply, which is where a Node producer spends its
 * time (see YARDSTICKS). The entries are the same as XADD would write
 * (`e` = frame, `t` = publish time, `o` = the publisher's clock, `p` = the
 * publisher), in argument order, so per-stream order is publish order. `o` and
 * `p` order history and replay across streams and masters: stream ids come
 * from each master's clock at millisecond resolution, `o` from the publisher.
 *
 * Retention. Redis 7 trims blindly (XADD/XTRIM know nothing of groups), so a
 * group more than `maxLen` entries behind would lose entries it never saw. Here
 * a stream keeps at least as many entries as the furthest-behind group has
 * unread or pending (XINFO GROUPS `lag` + `pending`), and time-based retention
 * keeps everything from the oldest entry a group has pending or unread; only
 * past `cap` entries is the oldest trimmed anyway, and the entries lost so are
 * counted in the reply (an estimate from the groups' lag, which Redis 7.0 keeps
 * high after a group lost entries, so after a first loss it can count high). (By length, a pending entry far older than the
 * rest can still be trimmed: the consumer counts it as trimmed while pending.)
 *
 * Idempotent: each call carries a mark key of its own, set (NX, with a
 * lifetime) before anything is written; a call that finds its mark was applied
 * already (ioredis sends unanswered commands again after a reconnect) writes
 * nothing and says so.
 *
 * KEYS[1..5] the streams of priority 0 (CRITICAL) .. 4 (BULK) of one partition (same hash slot)
 * KEYS[6] this call's mark (same hash slot)
 * ARGV[1] `MAXLEN` or `MINID`; ARGV[2] its threshold (entries, or the oldest id to keep);
 * ARGV[3] cap: the most entries a stream holds while a group lags (time-based
 *   retention applies it only while a lagging group holds the stream past its time);
 * ARGV[4] the publisher's id (field `p`); ARGV[5] the mark's lifetime (ms);
 * then quadruples from ARGV[6]: priority level (0-4), publish time (ms), the
 *   publisher's clock (field `o`, see RedisStreamsTransport.tick), frame
 * Reply: { entries added, entries trimmed before some group read them } or,
 *   for a repeated call, { 0, 0, 1 }
 */
export const PUBLISH_6 = `
local function older(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
-- What the groups still need: the most entries any group has unread or pending
-- (XINFO GROUPS lag + pending), and, when ids are wanted, the oldest id some
-- group still needs (its oldest pending entry, or its first unread one). A
-- group whose next entry does not exist has read everything, whatever its
-- lag says (Redis 7.0 keeps lag high after entries it never read were trimmed).
local function needed(key, ids)
  local most, first = 0, nil
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
    local name, lag, last, pending
    for i = 1, #g, 2 do
      local f = g[i]
      if f == 'name' then name = g[i + 1]
      elseif f == 'lag' then lag = g[i + 1]
      elseif f == 'pending' then pending = g[i + 1]
      elseif f == 'last-delivered-id' then last = g[i + 1] end
    end
    local need = pending or 0
    if type(lag) == 'number' and lag > 0 then
      local nxt = redis.call('XRANGE', key, '(' .. last, '+', 'COUNT', 1)[1]
      if nxt then
        need = need + lag
        if ids and (first == nil or older(nxt[1], first)) then first = nxt[1] end
      end
    end
    if ids and pending and pending > 0 then
      local oldest = redis.call('XPENDING', key, name)[2]
      if oldest and (first == nil or older(oldest, first)) then first = oldest end
    end
    if need > most then most = need end
  end
  return most, first
end

-- of the entries a trim removed (before - after), those some group still needed
local function lostBy(before, after, most)
  local short = most - after
  if short <= 0 then return 0 end
  local removed = before - after
  if short < removed then return short end
  return removed
end

-- this call's mark: a call ioredis sent again after a reconnect (the first was applied, its reply
-- lost with the connection) finds it and writes nothing twice
if not redis.call('SET', KEYS[6], '1', 'PX', ARGV[5], 'NX') then return { 0, 0, 1 } end
local n = 0
local touched = {}
local pub = ARGV[4]
for i = 6, #ARGV, 4 do
  local k = tonumber(ARGV[i]) + 1
  redis.call('XADD', KEYS[k], '*', 'e', ARGV[i + 3], 't', ARGV[i + 1], 'o', ARGV[i + 2], 'p', pub)
  touched[k] = true
  n = n + 1
end
local cap = tonumber(ARGV[3])
local lost = 0
for k in pairs(touched) do
  local key = KEYS[k]
  local len = redis.call('XLEN', key)
  if ARGV[1] == 'MAXLEN' then
    local keep = tonumber(ARGV[2])
    if len > keep then
      local most = needed(key, false)
      if most > keep then keep = most end
      if keep > cap then keep = cap end
      if len > keep then
        redis.call('XTRIM', key, 'MAXLEN', '~', keep)
        lost = lost + lostBy(len, redis.call('XLEN', key), most)
      end
    end
  else
    local floor = ARGV[2]
    local most, first = needed(key, true)
    local held = first ~= nil and older(first, floor)
    if held then floor = first end
    redis.call('XTRIM', key, 'MINID', '~', floor)
    local left = redis.call('XLEN', key)
    if held and left > cap then
      redis.call('XTRIM', key, 'MAXLEN', '~', cap)
      lost = lost + lostBy(left, redis.call('XLEN', key), most)
    end
  end
end
return { n, lost }
`;

/**
 * Length of the header in front of the frame in a member of the delayed set:
 * one digit for the priority level, 16 hex digits of a random id (so two
 * identical events scheduled at once stay two members) and a `:`.
 */
export const DELAYED_HEADER_LEN = 18;

/**
 * schedule-2: stores a delayed retry in the partition's delayed set, scored by
 * its due time on Redis's clock (so publishers' clocks never matter). For a
 * delivery handed back (`nack(delay)`), it also acknowledges the original
 * entry in the same step, so the retry is never both pending and scheduled,
 * and schedules nothing when that entry is no longer pending (someone else
 * settled it).
 *
 * KEYS[1] the delayed set; KEYS[2] the event stream of the original entry (same hash slot)
 * ARGV[1] delay (ms); ARGV[2] the member (header + frame); ARGV[3] consumer group,
 * or '' when there is no entry to acknowledge; ARGV[4] entry id
 * Reply: the due time (epoch ms), or 0 when the entry was not pending.
 */
export const SCHEDULE_2 = `
if ARGV[3] ~= '' and redis.call('XACK', KEYS[2], ARGV[3], ARGV[4]) == 0 then return 0 end
local now = redis.call('TIME')
local due = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], due, ARGV[2])
return due
`;

/**
 * promote-6: moves delayed retries that are due into the event streams, each
 * to the stream of its priority with the frame in 'e' and the time in 't' (as
 * a publish does), and removes them from the delayed set. One script, so any
 * number of processes can run the promoter: each member is published once.
 *
 * KEYS[1] the delayed set; KEYS[2]..KEYS[6] the event streams of priority 0..4 (same hash slot)
 * ARGV[1] most members to move. No trimming here: publish-5 trims, and knows
 * what the consumer groups still need.
 * Reply: how many members were moved.
 */
export const PROMOTE_6 = `
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local t = now[1] .. string.format('%03d', math.floor(tonumber(now[2]) / 1000))
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ms, 'LIMIT', 0, tonumber(ARGV[1]))
for _, m in ipairs(due) do
  local level = tonumber(string.sub(m, 1, 1)) or 2
  if level < 0 or level > 4 then level = 2 end
  redis.call('XADD', KEYS[2 + level], '*', 'e', string.sub(m, ${DELAYED_HEADER_LEN} + 1), 't', t)
  redis.call('ZREM', KEYS[1], m)
end
return #due
`;
